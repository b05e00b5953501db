"""OCI and Docker formats on the wire and on disk: layer tars and their compression, image layouts,
references, the registry client with its authentication, and pulling a base image into the store."""
