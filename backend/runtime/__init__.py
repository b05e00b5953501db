"""Running one container: the OCI runtime (runc/crun), its config, seccomp, the step's network
namespace and the ssh-agent proxy."""
