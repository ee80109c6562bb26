"""The PyTorch reference: the original project's CNN, trained with SGD and CrossEntropyLoss."""
