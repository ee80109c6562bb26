"""What both trainers share, framework-neutral: it imports neither PyTorch nor JAX (tests/test_architecture.py
proves it)."""
