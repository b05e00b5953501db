"""The Dockerfile frontend: parser (parse.py), typed instructions, expansion, .dockerignore."""
