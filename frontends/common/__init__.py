"""What the step-by-step frontends share: the stage lowering all three use (:mod:`.stage`), the
recipe model the TOML and Python frontends read into (:mod:`.model`), and its lowering (:mod:`.lower`);
and the BuildKit rules beneath them: image config and history (:mod:`.image_config`,
:mod:`.gostrings`), ``--mount`` (:mod:`.mounts`), COPY values (:mod:`.copy_paths`), platforms and
predefined args (:mod:`.platforms`), variable expansion (:mod:`.expand`), base images and named
contexts (:mod:`.sources`).  Nothing here imports a frontend: dockerfile/ → common/, never back."""
