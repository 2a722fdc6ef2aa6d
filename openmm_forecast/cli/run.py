"""``openmm-forecast run``: accelerated MD of a named setup with a forecaster, checkpointed and resumable.

Writes into OUT: ``run.json`` (the settings), ``trajectory.dcd`` (DCDReporter), ``log.csv``
(StateDataReporter), ``topology.pdb``, ``checkpoint.chk`` (every ``--checkpoint-interval`` ps and at the end)
and ``stats.json`` (the accelerator's statistics, rewritten at every checkpoint).  ``--resume`` continues from
``checkpoint.chk`` up to the given total ``--time``: frames and log lines written after the checkpoint by
the interrupted run are removed first, so nothing is lost or duplicated.  A resumed run must keep the
settings in ``run.json`` (temperature, time step, model, report interval, ...; only ``--time``,
``--checkpoint-interval``, ``--threads`` and ``--no-progress`` may change), and its platform defaults to
the recorded one.  ``--resume`` in a directory with a trajectory or log but no checkpoint is refused
(nothing to continue from, and starting again would overwrite them).

Ctrl-C (SIGINT) or SIGTERM: the current cycle ends (every jump finished or undone), a final checkpoint and
``stats.json`` are written, the command to resume is printed, and the exit code is 130 (143 for SIGTERM).
A second signal stops at once (the last checkpoint stands).
"""

import contextlib
import json
import logging
import os
import shlex
import signal
import struct
import time

from openmm import app, unit

from .._io import atomic_write_path, check_output_directory, write_json
from ..errors import RunInterrupted
from ._common import (
    POSITIVE,
    SEED,
    add_acceptance_arguments,
    add_baseline_arguments,
    add_setup_arguments,
    baseline_options,
    setup_from_args,
    steps,
)

logger = logging.getLogger(__name__)

TRAJECTORY, LOG, TOPOLOGY = "trajectory.dcd", "log.csv", "topology.pdb"
CHECKPOINT, STATS, SETTINGS = "checkpoint.chk", "stats.json", "run.json"
RESUMABLE_FLAGS = {
    "setup": "--setup", "temperature": "--temperature", "timestep": "--timestep", "friction": "--friction",
    "constraints": "--constraints", "potential_file": "--potential-file", "model": "--model", "seed": "--seed",
    "report_interval": "--report-interval", "stride": "--stride", "max_frames": "--max-frames",
    "surrogate": "--surrogate", "surrogate_timestep": "--surrogate-timestep",
    "energy_tolerance": "--energy-tolerance", "acceptance": "--acceptance", "platform": "--platform",
}
"""Settings recorded in run.json that a resumed run must keep, with their flags."""


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "run",
        help="accelerated MD: forecast jumps guarded by energy checks, checkpointed and resumable",
        description="Accelerated MD of a named setup with a forecaster (a baseline name, a shipped model or a "
        "model file). Writes OUT/run.json (settings a --resume must keep), OUT/trajectory.dcd, OUT/log.csv, "
        "OUT/topology.pdb, OUT/checkpoint.chk and OUT/stats.json.",
    )
    add_setup_arguments(parser)
    parser.add_argument("--model", required=True,
                        help="forecaster: 'surrogate' (velocity Verlet on --surrogate), 'verlet', 'ballistic', "
                        "'constant', a shipped model or a model file")
    parser.add_argument("--time", type=POSITIVE, required=True,
                        help="total simulated time in ps (a resumed run continues up to it)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--seed", type=SEED, default=1,
                        help="seed of the thermostat, the velocities and the Metropolis stream")
    parser.add_argument("--report-interval", type=POSITIVE, default=1.0,
                        help="ps between trajectory frames and log lines (default 1)")
    parser.add_argument("--checkpoint-interval", type=POSITIVE, default=10.0,
                        help="ps between checkpoints (default 10)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from OUT/checkpoint.chk (start from the beginning when OUT holds no run yet)")
    add_baseline_arguments(parser)
    add_acceptance_arguments(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def truncate_dcd(path, last_step, expected_atoms=None):
    """Drop the frames of an OpenMM DCD file recorded after ``last_step`` (and any partly written frame).

    Parameters
    ----------
    path : str
    last_step : int
    expected_atoms : int, optional
        Refuse (``ValueError``, nothing changed) a file with another number of atoms: the trajectory of
        another run, to which appending would write garbage.

    Returns
    -------
    int
        Frames kept.
    """
    with open(path, "r+b") as handle:
        header = handle.read(100)
        if len(header) < 100 or header[4:8] != b"CORD":
            raise ValueError(f"{path} is not a DCD file (a trajectory of another program, or damaged)")
        first_step, interval = struct.unpack("<2i", header[12:20])
        has_box = struct.unpack("<i", header[48:52])[0]
        handle.seek(92)
        comments = struct.unpack("<i", handle.read(4))[0]
        handle.seek(104 + comments)
        n_atoms = struct.unpack("<i", handle.read(4))[0]
        if expected_atoms is not None and n_atoms != expected_atoms:
            raise ValueError(
                f"{path} holds frames of {n_atoms} atoms, this run has {expected_atoms}: the trajectory of another "
                "run; move it away to resume"
            )
        header_bytes = 104 + comments + 8
        frame_bytes = 3 * (8 + 4 * n_atoms) + (56 if has_box else 0)
        complete = (os.path.getsize(path) - header_bytes) // frame_bytes
        due = 0 if last_step < first_step else (last_step - first_step) // interval + 1
        keep = min(complete, due)
        if keep < due:
            logger.warning("%s holds %d whole frames up to the checkpoint's step %d, which is due %d: %d frames were "
                           "lost (the file was cut); the run continues after them", path, keep, last_step, due,
                           due - keep)
        handle.truncate(header_bytes + keep * frame_bytes)
        handle.seek(8)
        handle.write(struct.pack("<i", keep))
        handle.seek(20)
        handle.write(struct.pack("<i", first_step + max(keep - 1, 0) * interval))
    return keep


def truncate_log(path, last_step):
    """Drop the lines of a StateDataReporter CSV (step in the first column) after ``last_step``."""
    with open(path) as handle:
        lines = handle.readlines()
    kept = [
        line for line in lines
        if line.startswith("#") or (line.endswith("\n") and int(float(line.split(",")[0])) <= last_step)
    ]
    with atomic_write_path(path) as temporary:  # a kill during a resume must not lose the log
        with open(temporary, "w") as handle:
            handle.writelines(kept)


def run(args):
    from ..accelerator import ForecastAccelerator
    from ..forecasters import load_forecaster

    timestep_ps = args.timestep / 1000.0
    total_steps = steps(args.time, timestep_ps, "--time")
    interval = steps(args.report_interval, timestep_ps, "--report-interval")
    checkpoint_steps = steps(args.checkpoint_interval, timestep_ps, "--checkpoint-interval")
    paths = {name: os.path.join(args.out, name) for name in (TRAJECTORY, LOG, TOPOLOGY, CHECKPOINT, STATS, SETTINGS)}
    check_output_directory(args.out, "--out", () if args.resume else (TRAJECTORY, LOG, CHECKPOINT),
                           hint="pass --resume to continue the run or choose another --out")
    outputs = [name for name in (TRAJECTORY, LOG) if os.path.exists(paths[name])]
    recorded = _read_settings(paths[SETTINGS])
    resuming = args.resume and os.path.exists(paths[CHECKPOINT])
    if args.resume:
        if outputs and not resuming:
            raise ValueError(
                f"{args.out} holds {', '.join(outputs)} but no {CHECKPOINT} (a run stopped before its first "
                "checkpoint, or another command's output): nothing to continue from, and starting again would "
                f"overwrite them; remove {' and '.join(outputs)} to start again, or choose another --out"
            )
        if recorded is None and resuming:
            logger.warning("%s has no %s (an older run): its settings cannot be checked", args.out, SETTINGS)
        if recorded is not None:
            if args.platform is None:
                args.platform = recorded.get("platform")
            _check_same_settings(recorded, _settings(args), paths[SETTINGS])
        if not resuming:
            logger.info("no checkpoint in %s: starting from the beginning", args.out)
    molecular_system = setup_from_args(args)

    forecaster = load_forecaster(args.model, molecular_system=molecular_system, **(baseline_options(args) or {}))
    simulation = molecular_system.create_simulation(platform=args.platform, seed=args.seed, minimize=not resuming)
    accelerator = ForecastAccelerator(
        simulation, forecaster, molecular_system=molecular_system, seed=args.seed,
        energy_tolerance_kT=args.energy_tolerance, acceptance=args.acceptance,
        progress=False if args.no_progress else None,
    )
    os.makedirs(args.out, exist_ok=True)  # only now: refused input leaves no directory behind
    if resuming:
        accelerator.load_checkpoint(paths[CHECKPOINT])
        if recorded is None:  # a run from before run.json: record its settings now, checked from now on
            write_json(paths[SETTINGS], {**_settings(args), "platform": simulation.context.getPlatform().getName()})
        step = simulation.currentStep
        if os.path.exists(paths[TRAJECTORY]):
            kept = truncate_dcd(paths[TRAJECTORY], step, expected_atoms=simulation.system.getNumParticles())
            logger.info("resuming at step %d; %d trajectory frames kept", step, kept)
        if os.path.exists(paths[LOG]):
            truncate_log(paths[LOG], step)
    else:
        write_json(paths[SETTINGS], {**_settings(args), "platform": simulation.context.getPlatform().getName()})
    if not resuming or not os.path.exists(paths[TOPOLOGY]):  # a resumed run rewrites a missing topology
        state = simulation.context.getState(getPositions=True)
        with atomic_write_path(paths[TOPOLOGY]) as temporary:
            with open(temporary, "w") as handle:
                app.PDBFile.writeFile(molecular_system.topology, state.getPositions(), handle)
    simulation.reporters.append(
        app.DCDReporter(paths[TRAJECTORY], interval, append=resuming and os.path.exists(paths[TRAJECTORY]))
    )
    simulation.reporters.append(
        app.StateDataReporter(
            paths[LOG], interval, step=True, time=True, potentialEnergy=True, kineticEnergy=True,
            totalEnergy=True, temperature=True, append=resuming and os.path.exists(paths[LOG]),
        )
    )

    start = time.perf_counter()
    try:
        with _progress_bar(args, simulation.currentStep, total_steps) as bar, _stop_on_signals(accelerator):
            accelerator.progress_bar = bar
            while simulation.currentStep < total_steps:
                accelerator.step(min(checkpoint_steps, total_steps - simulation.currentStep))
                accelerator.save_checkpoint(paths[CHECKPOINT])
                wall_s = time.perf_counter() - start
                write_json(paths[STATS], _summary(args, molecular_system, simulation, accelerator, wall_s))
    except RunInterrupted as interruption:
        accelerator.save_checkpoint(paths[CHECKPOINT])
        write_json(paths[STATS], _summary(args, molecular_system, simulation, accelerator, time.perf_counter() - start))
        arguments = list(getattr(args, "argv", None) or [])
        arguments += [] if "--resume" in arguments else ["--resume"]
        print(
            f"interrupted ({signal.Signals(interruption.signum).name}) at step {simulation.currentStep} "
            f"({simulation.currentStep * timestep_ps:g} ps of {args.time:g}); checkpoint written to "
            f"{paths[CHECKPOINT]}. Resume with:\n  openmm-forecast {shlex.join(arguments)}"
        )
        return 128 + interruption.signum
    summary = _summary(args, molecular_system, simulation, accelerator, time.perf_counter() - start)
    write_json(paths[STATS], summary)
    stats = summary["stats"]
    print(
        f"{simulation.currentStep} steps ({simulation.currentStep * timestep_ps:g} ps); jumps accepted "
        f"{stats['jumps_accepted']}/{stats['jumps_attempted']}; {stats['jumped_ps']:.3f} ps jumped, "
        f"{stats['integrated_ps']:.3f} ps integrated; outputs in {args.out}"
    )
    return 0


@contextlib.contextmanager
def _progress_bar(args, done_steps, total_steps):
    """One tqdm bar for the whole run (overall ETA), with log lines printed above it, not onto it."""
    from tqdm.auto import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    disable = True if args.no_progress else None
    with tqdm(total=total_steps, initial=done_steps, unit="step", desc="run", disable=disable) as bar:
        with logging_redirect_tqdm():
            yield bar


@contextlib.contextmanager
def _stop_on_signals(accelerator):
    """While the block runs, SIGINT and SIGTERM ask ``accelerator`` to stop at its next cycle boundary; a
    second signal interrupts at once (``KeyboardInterrupt``)."""
    def handler(signum, frame):
        if getattr(handler, "asked", False):
            raise KeyboardInterrupt(signum)
        handler.asked = True
        logger.warning("%s: stopping after the current cycle (again to stop at once)", signal.Signals(signum).name)
        accelerator.request_stop(signum)

    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _settings(args):
    """What a resumed run must keep (see :data:`RESUMABLE_FLAGS`); the platform only when given."""
    from ..forecasters.registry import BASELINES

    settings = {
        "setup": args.setup, "temperature": args.temperature, "timestep": args.timestep, "friction": args.friction,
        "constraints": args.constraints, "potential_file": args.potential_file, "model": args.model,
        "seed": args.seed, "report_interval": args.report_interval, "energy_tolerance": args.energy_tolerance,
        "acceptance": args.acceptance,
    }
    if args.model in BASELINES:
        settings.update(stride=args.stride, max_frames=args.max_frames)
    if args.model == "surrogate":
        settings.update(surrogate=args.surrogate, surrogate_timestep=args.surrogate_timestep)
    if args.platform is not None:
        settings["platform"] = args.platform
    return settings


def _read_settings(path):
    if not os.path.exists(path):
        return None
    with open(path) as handle:
        try:
            settings = json.load(handle)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON ({error}); it records the run's settings") from error
    if "metropolis" in settings and "acceptance" not in settings:  # written before --acceptance existed
        settings["acceptance"] = "metropolis" if settings.pop("metropolis") else "tolerance"
    return settings


def _check_same_settings(recorded, settings, path):
    """Refuse a resume whose settings differ from the run's, naming every differing flag."""
    differences = [
        f"{RESUMABLE_FLAGS[key]} {value!r} (the run has {recorded.get(key)!r})"
        for key, value in settings.items() if recorded.get(key) != value
    ]
    if differences:
        raise ValueError(
            f"a resumed run must keep its settings ({path}); different: {'; '.join(differences)}. "
            "Only --time, --checkpoint-interval, --threads and --no-progress may change"
        )


def _summary(args, molecular_system, simulation, accelerator, wall_s):
    return {
        "setup": molecular_system.setup,
        "model": args.model,
        "forecaster": accelerator.forecaster.metadata.architecture,
        "platform": simulation.context.getPlatform().getName(),
        "step": simulation.currentStep,
        "time_ps": simulation.context.getTime().value_in_unit(unit.picosecond),
        "seed": args.seed,
        "wall_s_this_session": wall_s,
        "stats": accelerator.stats.as_dict(),
    }
