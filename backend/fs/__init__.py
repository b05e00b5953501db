"""Trees on disk, safely: walks beneath a root that never follow a planted link, paths resolved
inside a container root, device placeholders, the overlay layer format and user databases.
Imports no other room."""
