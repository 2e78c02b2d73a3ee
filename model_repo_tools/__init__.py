"""Triton model repositories, their validation, and the profile and fleet contracts."""
