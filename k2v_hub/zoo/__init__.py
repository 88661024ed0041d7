"""The model zoo: real image sources and small classifiers trained on them, published like Hub models."""
