"""What the step-by-step frontends share: the stage lowering all three use (:mod:`.stage`), the
recipe model the TOML and Python frontends read into (:mod:`.model`), and its lowering (:mod:`.lower`)."""
