"""``--backend {local,ray}``: where the walkers of ``run`` and ``benchmark``, and the sampling chains of ``fit-surrogate``, run."""

from ..distributed import BACKENDS, INSTALL_HINT

GPU_PLATFORMS = ("CUDA", "OpenCL", "HIP")
"""Platforms whose Ray actors each reserve one GPU."""


def add_backend_argument(parser, what="the walkers"):
    parser.add_argument("--backend", choices=BACKENDS, default="local",
                        help=f"where {what} run: 'local' (this process, default) or 'ray' (Ray actors of one CPU, "
                        "or one GPU with a GPU --platform, each: the cluster at $RAY_ADDRESS, else a local one with "
                        f"the cores this process may use; needs {INSTALL_HINT}). Samples are the same; the report "
                        "records where each walker ran")


def backend_from_args(args, workers=None):
    """None for ``--backend local``; else a :class:`~openmm_forecast.distributed.RayBackend` of ``workers`` workers
    (default: the cluster's CPUs or GPUs; UsageError without Ray)."""
    if args.backend == "local":
        return None
    from ..distributed import RayBackend

    potential_file = getattr(args, "potential_file", None)
    return RayBackend(workers=workers, gpus_per_worker=1 if args.platform in GPU_PLATFORMS else 0,
                      build_options={"potential_file": potential_file} if potential_file else None)
