"""``openmm-forecast run``: accelerated MD of a target (a named setup, or ``--system/--pdb``, ``--prmtop/--inpcrd``)
with a forecaster, checkpointed and resumable.

Writes into OUT: ``run.json`` (the settings), ``trajectory.dcd`` (DCDReporter), ``log.csv``
(StateDataReporter), ``topology.pdb``, ``checkpoint.chk`` (every ``--checkpoint-interval`` ps and at the end)
and ``stats.json`` (the accelerator's statistics, rewritten at every checkpoint).  ``--resume`` continues from
``checkpoint.chk`` up to the given total ``--time``: frames and log lines written after the checkpoint by
the interrupted run are removed first, so nothing is lost or duplicated.  The trajectory, the log and the
checkpoint must agree: a resume whose trajectory or log lacks frames or lines up to the checkpoint's step
(a file cut or replaced) is refused, naming the file and the missing steps, with nothing changed (appending
would hide the gap).  A resume to a ``--time`` the run has already reached changes nothing (and is refused
when the run is beyond it).  A resumed run must keep the
settings in ``run.json`` (temperature, time step, model, report interval, ...; only ``--time``,
``--checkpoint-interval``, ``--threads`` and ``--no-progress`` may change), and its platform defaults to
the recorded one.  ``--resume`` in a directory with a trajectory or log but no checkpoint is refused
(nothing to continue from, and starting again would overwrite them).

Ctrl-C (SIGINT) or SIGTERM: the current cycle ends (every jump finished or undone), a final checkpoint and
``stats.json`` are written, the command to resume is printed, and the exit code is 130 (143 for SIGTERM).
A second signal stops at once (the last checkpoint stands).

A run whose state blows up (non-finite, or hotter than
:data:`~openmm_forecast.reporters.MAX_TEMPERATURE_FACTOR` times ``--temperature``) stops with exit 1 and a
message naming the step: that state reaches neither the trajectory, the log nor the checkpoint.
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

from .._io import atomic_write_path, check_output_directory, file_sha256, write_json
from ..distributed import where
from ..errors import BlowUpError, DataFileError, RunInterrupted, UsageError
from ..reporters import BlowUpReporter
from ._backend import add_backend_argument, backend_from_args
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
    "setup": "--setup", "system": "--system", "pdb": "--pdb", "prmtop": "--prmtop", "inpcrd": "--inpcrd",
    "implicit_solvent": "--implicit-solvent", "temperature": "--temperature", "timestep": "--timestep",
    "friction": "--friction",
    "constraints": "--constraints", "potential_file": "--potential-file", "model": "--model", "seed": "--seed",
    "report_interval": "--report-interval", "stride": "--stride", "max_frames": "--max-frames",
    "surrogate": "--surrogate", "surrogate_timestep": "--surrogate-timestep",
    "energy_tolerance": "--energy-tolerance", "acceptance": "--acceptance", "platform": "--platform",
    "allow_inexact_metropolis": "--allow-inexact-metropolis",
}
"""Settings recorded in run.json that a resumed run must keep, with their flags."""

FILE_SETTINGS = ("model", "potential_file", "surrogate", "system", "pdb", "prmtop", "inpcrd")
"""Settings that may name a file: compared by content (SHA-256 recorded in run.json), not by path."""

FILE_HASHES = "file_sha256"
"""Key of run.json holding ``{setting: SHA-256}`` of every file a setting names."""


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "run",
        help="accelerated MD: forecast jumps guarded by energy checks, checkpointed and resumable",
        description="Accelerated MD of a target (--setup, --system/--pdb or --prmtop/--inpcrd) with a forecaster (a "
        "baseline name, a shipped model or a model file). Writes OUT/run.json (settings a --resume must keep), "
        "OUT/trajectory.dcd, OUT/log.csv, OUT/topology.pdb, OUT/checkpoint.chk and OUT/stats.json.",
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
    add_backend_argument(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def dcd_frames(path, expected_atoms=None):
    """The layout of an OpenMM DCD file: what its header says and how many whole frames it holds.

    Parameters
    ----------
    path : str or os.PathLike
    expected_atoms : int, optional
        Refuse (``DataFileError``) a file with another number of atoms: the trajectory of another run, to which
        appending would write garbage.

    Returns
    -------
    dict
        ``first_step`` and ``interval`` (steps, from the header), ``atoms``, ``frames`` (whole frames in the
        file), ``header_bytes`` and ``frame_bytes``.
    """
    with open(path, "rb") as handle:
        header = handle.read(100)
        if len(header) < 100 or header[4:8] != b"CORD":
            raise DataFileError(f"{path} is not a DCD file (a trajectory of another program, or damaged)")
        first_step, interval = struct.unpack("<2i", header[12:20])
        has_box = struct.unpack("<i", header[48:52])[0]
        handle.seek(92)
        comments = struct.unpack("<i", handle.read(4))[0]
        handle.seek(104 + comments)
        atoms = struct.unpack("<i", handle.read(4))[0]
    if expected_atoms is not None and atoms != expected_atoms:
        raise DataFileError(
            f"{path} holds frames of {atoms} atoms, this run has {expected_atoms}: the trajectory of another "
            "run; move it away to resume"
        )
    header_bytes = 104 + comments + 8
    frame_bytes = 3 * (8 + 4 * atoms) + (56 if has_box else 0)
    return {"first_step": first_step, "interval": interval, "atoms": atoms, "header_bytes": header_bytes,
            "frame_bytes": frame_bytes, "frames": max(os.path.getsize(path) - header_bytes, 0) // frame_bytes}


def truncate_dcd(path, last_step):
    """Drop the frames of an OpenMM DCD file recorded after ``last_step`` (and any partly written frame).

    Returns
    -------
    int
        Frames kept.
    """
    layout = dcd_frames(path)
    first_step, interval = layout["first_step"], layout["interval"]
    due = 0 if last_step < first_step else (last_step - first_step) // interval + 1
    keep = min(layout["frames"], due)
    with open(path, "r+b") as handle:
        handle.truncate(layout["header_bytes"] + keep * layout["frame_bytes"])
        handle.seek(8)
        handle.write(struct.pack("<i", keep))
        handle.seek(20)
        handle.write(struct.pack("<i", first_step + max(keep - 1, 0) * interval))
    return keep


def log_steps(path):
    """Steps of the complete lines (ending in a newline) of a StateDataReporter CSV, step in the first column."""
    with open(path) as handle:
        lines = handle.readlines()
    steps = []
    for line in lines:
        if line.startswith("#") or not line.endswith("\n"):
            continue
        try:
            steps.append(int(float(line.split(",")[0])))
        except ValueError:
            raise DataFileError(f"{path} has a line that is not a report of this run: {line.strip()[:60]!r}") from None
    return steps


def truncate_log(path, last_step):
    """Drop the lines of a StateDataReporter CSV (step in the first column) after ``last_step``, and a cut last line."""
    with open(path) as handle:
        lines = handle.readlines()
    kept = [
        line for line in lines
        if line.startswith("#") or (line.endswith("\n") and int(float(line.split(",")[0])) <= last_step)
    ]
    with atomic_write_path(path) as temporary:  # a kill during a resume must not lose the log
        with open(temporary, "w") as handle:
            handle.writelines(kept)


def check_outputs_agree(paths, step, interval, n_atoms):
    """Refuse to resume when the trajectory or the log lacks reports the checkpoint says were written.

    A resumed run appends its reports after the checkpoint's step; if frames or lines before it are missing
    (a file cut, damaged or replaced), the appended ones would sit after a hidden gap (a DCD's frames read as
    contiguous).  Reports after the checkpoint's step are not checked: the resume removes them.

    Parameters
    ----------
    paths : dict
        ``{file name: path}`` of the run's files.
    step : int
        The checkpoint's step.
    interval : int
        Steps between reports (``--report-interval``).
    n_atoms : int

    Raises
    ------
    DataFileError
        Naming each file and what is missing; nothing is changed.
    """
    expected = list(range(interval, step + 1, interval))
    problems = [f"{name} is missing" for name in (TRAJECTORY, LOG) if not os.path.exists(paths[name])]
    if os.path.exists(paths[TRAJECTORY]):
        layout = dcd_frames(paths[TRAJECTORY], expected_atoms=n_atoms)
        if layout["interval"] != interval:
            problems.append(f"{TRAJECTORY} has a frame every {layout['interval']} steps, the run reports every "
                            f"{interval}")
        elif layout["frames"] < len(expected):
            first_missing = interval * (layout["frames"] + 1)
            steps_missing = f"{first_missing}" if first_missing == expected[-1] else f"{first_missing}-{expected[-1]}"
            problems.append(f"{TRAJECTORY} holds {layout['frames']} whole frames where {len(expected)} are due (the "
                            f"frames of steps {steps_missing} are missing)")
    if os.path.exists(paths[LOG]):
        written = [reported for reported in log_steps(paths[LOG]) if reported <= step]
        if written != expected:
            missing = sorted(set(expected) - set(written))
            problems.append(f"{LOG} has {len(written)} complete lines up to that step where {len(expected)} are due"
                            + (f" (missing: steps {', '.join(map(str, missing[:5]))}"
                               f"{', ...' if len(missing) > 5 else ''})" if missing else " (some repeated)"))
    if problems:
        raise DataFileError(
            f"cannot resume: {CHECKPOINT} is at step {step}, but {'; '.join(problems)}. Appending would leave a "
            "hidden gap in the run's record; nothing was changed. Restore the files, or run again into another --out"
        )


def run(args):
    backend = backend_from_args(args, workers=1)
    if backend is not None:  # the whole command in one Ray worker (stats.json says which)
        from ..distributed import run_remotely

        try:
            return run_remotely(run, args, backend)
        finally:
            backend.shutdown()
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
        allow_inexact_metropolis=args.allow_inexact_metropolis, progress=False if args.no_progress else None,
    )
    os.makedirs(args.out, exist_ok=True)  # only now: refused input leaves no directory behind
    if resuming:
        accelerator.load_checkpoint(paths[CHECKPOINT])
        step = simulation.currentStep
        if step >= total_steps:  # nothing to do: say so, and leave the run's files (stats.json too) as they are
            if step > total_steps:
                raise UsageError(f"the run in {args.out} is already at {step * timestep_ps:g} ps (step {step}), beyond "
                                 f"--time {args.time:g}: a run cannot be shortened; give a longer --time to extend it")
            print(f"the run in {args.out} is already at --time {args.time:g} ps (step {step}): nothing to do; give a "
                  "longer --time to extend it")
            return 0
        check_outputs_agree(paths, step, interval, simulation.system.getNumParticles())
        if recorded is None:  # a run from before run.json: record its settings now, checked from now on
            write_json(paths[SETTINGS], _record(args, simulation))
        kept = truncate_dcd(paths[TRAJECTORY], step)
        truncate_log(paths[LOG], step)
        logger.info("resuming at step %d; %d trajectory frames kept", step, kept)
    else:
        write_json(paths[SETTINGS], _record(args, simulation))
    guard = BlowUpReporter(simulation.system, molecular_system.temperature, interval)
    simulation.reporters.append(guard)  # first: a state that blew up reaches neither the trajectory nor the log
    if not resuming or not os.path.exists(paths[TOPOLOGY]):  # a resumed run rewrites a missing topology
        state = simulation.context.getState(getPositions=True)
        with atomic_write_path(paths[TOPOLOGY]) as temporary:
            with open(temporary, "w") as handle:
                app.PDBFile.writeFile(molecular_system.topology, state.getPositions(), handle)
    simulation.reporters.append(
        app.DCDReporter(paths[TRAJECTORY], interval, append=resuming)
    )
    simulation.reporters.append(
        app.StateDataReporter(
            paths[LOG], interval, step=True, time=True, potentialEnergy=True, kineticEnergy=True,
            totalEnergy=True, temperature=True, append=resuming,
        )
    )

    start = time.perf_counter()
    saved_step = simulation.currentStep if resuming else None
    try:
        with _progress_bar(args, simulation.currentStep, total_steps) as bar, _stop_on_signals(accelerator):
            accelerator.progress_bar = bar
            while simulation.currentStep < total_steps:
                accelerator.step(min(checkpoint_steps, total_steps - simulation.currentStep))
                guard.check_simulation(simulation)  # never a checkpoint of a state that blew up
                accelerator.save_checkpoint(paths[CHECKPOINT])
                saved_step = simulation.currentStep
                wall_s = time.perf_counter() - start
                write_json(paths[STATS], _summary(args, molecular_system, simulation, accelerator, wall_s))
    except BlowUpError as error:
        kept = "no checkpoint" if saved_step is None else f"{CHECKPOINT} at step {saved_step}"
        raise BlowUpError(f"{error}; {TRAJECTORY} and {LOG} end at the last report before it, {kept} stands "
                          "(a shorter --timestep or a lower --temperature may help)", error.step) from error
    except RunInterrupted as interruption:
        guard.check_simulation(simulation)
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
    settings.update({key: getattr(args, key) for key in ("system", "pdb", "prmtop", "inpcrd", "implicit_solvent")
                     if getattr(args, key) is not None})  # the user's own target: its files, compared by content
    if args.allow_inexact_metropolis:  # recorded only when given: runs from before the flag resume unchanged
        settings["allow_inexact_metropolis"] = True
    if args.model in BASELINES:
        settings.update(stride=args.stride, max_frames=args.max_frames)
    if args.model == "surrogate":
        settings.update(surrogate=args.surrogate, surrogate_timestep=args.surrogate_timestep)
    if args.platform is not None:
        settings["platform"] = args.platform
    return settings


def _record(args, simulation):
    """run.json: the settings, the platform in use and the SHA-256 of every file a setting names."""
    settings = _settings(args)
    hashes = {key: file_sha256(settings[key]) for key in FILE_SETTINGS if _names_file(settings.get(key))}
    return {**settings, "platform": simulation.context.getPlatform().getName(), FILE_HASHES: hashes}


def _names_file(value):
    return isinstance(value, str) and os.path.isfile(value)


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
    """Refuse a resume whose settings differ from the run's, naming every differing flag.

    A setting that names a file (:data:`FILE_SETTINGS`) is the same when the file's content is: the same model
    by an absolute path, or a byte-identical copy, is the same model; an edited file under the same name is not.
    """
    hashes = recorded.get(FILE_HASHES, {})

    def same(key, value):
        old = recorded.get(key)
        if key in FILE_SETTINGS and _names_file(value):
            if key in hashes:
                return hashes[key] == file_sha256(value)
            if _names_file(old):  # a run.json from before the hashes: compare with the recorded file as it is now
                return file_sha256(old) == file_sha256(value)
        return old == value

    differences = [
        f"{RESUMABLE_FLAGS[key]} {value!r} (the run has {recorded.get(key)!r}"
        + (", compared by content)" if key in FILE_SETTINGS and _names_file(value) else ")")
        for key, value in settings.items() if not same(key, value)
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
        "ran_on": where(),
        "stats": accelerator.stats.as_dict(),
    }
