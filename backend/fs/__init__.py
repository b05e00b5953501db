"""Files and trees: safe walks beneath a root, the context, COPY and file actions, archives, user
databases, mount points, device placeholders and the overlay layer format. Imports no other room."""
