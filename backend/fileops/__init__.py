"""COPY, ADD and the other file actions: what they select from a context or a stage (and the
identity of that selection), and how they write it into a root: owners, modes, archives."""
