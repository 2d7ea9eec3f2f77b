"""Model loading (packaged offline defaults, Hugging Face names, local paths) and device choice."""
