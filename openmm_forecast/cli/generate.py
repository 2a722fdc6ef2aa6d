"""``openmm-forecast generate``: write an NVT trajectory or NVE segments to a resumable HDF5 data file."""

import json
import time

from openmm import unit

from ._common import NON_NEGATIVE, POSITIVE, SEED, add_setup_arguments, integer, setup_from_args

MAX_RECORDS = 10**6
"""Most ``--frames`` or ``--segments``: a data set of alanine dipeptide this size is already gigabytes."""


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "generate",
        help="generate training data: an NVT trajectory or NVE segments (HDF5, resumable)",
        description="Generate trajectory data with positions and velocities (see openmm_forecast.data). "
        "--mode nvt: one Langevin chain, a frame every --interval-fs. --mode nve: velocity Verlet segments of "
        "--segment-fs started every --spacing-ps from a Langevin chain, a frame every --frame-interval-fs. "
        "Running the same command again on an existing file resumes or extends it.",
    )
    add_setup_arguments(parser)
    parser.add_argument("--mode", choices=["nvt", "nve"], required=True, help="kind of data")
    parser.add_argument("--out", required=True, help="HDF5 file to write (resumed if it exists)")
    parser.add_argument("--seed", type=SEED, default=1, help="seed (>= 1) of thermostat and velocities (default 1)")
    parser.add_argument("--equilibration-ps", type=NON_NEGATIVE, default=100.0, help="ps of equilibration (default 100)")
    nvt = parser.add_argument_group("nvt mode")
    nvt.add_argument("--frames", type=integer(1, MAX_RECORDS), help=f"number of frames (at most {MAX_RECORDS})")
    nvt.add_argument("--interval-fs", type=POSITIVE, default=1000.0, help="fs between frames (default 1000)")
    nve = parser.add_argument_group("nve mode")
    nve.add_argument("--segments", type=integer(1, MAX_RECORDS), help=f"number of segments (at most {MAX_RECORDS})")
    nve.add_argument("--segment-fs", type=POSITIVE, default=40.0, help="fs spanned by a segment (default 40)")
    nve.add_argument("--frame-interval-fs", type=POSITIVE, default=2.0, help="fs between segment frames (default 2)")
    nve.add_argument("--nve-timestep-fs", type=POSITIVE, default=0.5, help="velocity Verlet step in fs (default 0.5)")
    nve.add_argument("--spacing-ps", type=POSITIVE, default=1.0, help="ps of Langevin chain between segment starts")
    parser.add_argument(
        "--commit-seconds", type=POSITIVE, default=30.0, help="wall seconds between commits to the file (default 30)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args):
    from ..data import data_fingerprint, generate_nve_segments, generate_nvt, load_trajectory

    from ..errors import UsageError

    count, name = (args.frames, "--frames") if args.mode == "nvt" else (args.segments, "--segments")
    if count is None:
        raise UsageError(f"--mode {args.mode} needs {name}")
    molecular_system = setup_from_args(args)
    fs = unit.femtosecond
    common = dict(
        seed=args.seed,
        equilibration=args.equilibration_ps * unit.picosecond,
        platform=args.platform,
        progress=not args.no_progress,
        commit_seconds=args.commit_seconds,
    )
    start = time.perf_counter()
    if args.mode == "nvt":
        generate_nvt(molecular_system, args.out, n_frames=count, interval=args.interval_fs * fs, **common)
    else:
        generate_nve_segments(
            molecular_system,
            args.out,
            n_segments=count,
            segment_length=args.segment_fs * fs,
            frame_interval=args.frame_interval_fs * fs,
            nve_timestep=args.nve_timestep_fs * fs,
            spacing=args.spacing_ps * unit.picosecond,
            **common,
        )
    data = load_trajectory(args.out)
    summary = {
        "file": args.out,
        "mode": data.mode,
        "records": len(data),
        "positions_shape": "x".join(str(n) for n in data.positions.shape),
        "platform": data.metadata["platform"],
        "wall_seconds_this_run": round(time.perf_counter() - start, 3),
        "data_fingerprint": data_fingerprint(args.out),
    }
    print(json.dumps(summary, indent=2))
    return 0
