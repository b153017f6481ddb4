"""The ``motionfit`` command: demo, run, stage, sweep, config, status, verify, report, synth, idt, flow.

Every subcommand imports what it needs when it runs: ``--help``, ``config`` and ``status`` load no torch,
torchvision, OpenCV, SciPy or scikit-learn (a test checks it)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

DEMO_RUN_ROOT = "runs/demo"


def _prefect_defaults() -> None:
    """Quiet, offline-friendly Prefect settings unless the user set them."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_TASKS_RUNNER_THREAD_POOL_MAX_WORKERS", "8")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")  # what runs send to the API; the terminal: below
    # The embedded server must start within this; Prefect's 20 s fails runs on a loaded 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    import yaml

    from motionfit.config import nested_overrides

    settings: dict[str, Any] = {}
    if getattr(args, "run_root", None):
        settings["run_root"] = args.run_root
    if getattr(args, "seed", None) is not None:
        settings["runtime.seed"] = args.seed
    for item in getattr(args, "set", None) or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects SECTION.FIELD=VALUE, got {item!r}")
        settings[key] = yaml.safe_load(raw)
    return nested_overrides(settings)


def _load(args: argparse.Namespace):
    """The config of a command: a YAML file or a preset (``tiny`` when neither is given), then the overlays
    and the ``--set``/``--seed``/``--run-root`` overrides; a file and a preset together are an error."""
    from motionfit.config import load_config

    if args.config is not None and args.preset is not None:
        raise SystemExit(f"give a config file or --preset, not both (got {args.config} and {args.preset})")
    preset = args.preset if args.config is not None or args.preset is not None else "tiny"
    return load_config(args.config, None if args.config else preset, _overrides(args), args.overlay)


def cmd_config(args: argparse.Namespace) -> int:
    """Print the resolved, validated config as YAML (the run's ``config.yaml`` has the same form)."""
    import yaml

    config = _load(args)
    print(yaml.safe_dump(config.model_dump(mode="json", by_alias=True), sort_keys=False), end="")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from motionfit.flows.pipeline import pipeline_flow

    config = _load(args)
    pipeline_flow(config, until=args.until, only=args.only, start=args.start, wait=args.wait)
    print(f"run finished: {config.run_root}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run a sweep's settings as subflows of one flow run and print its table; ``--list`` the shipped ones."""
    from motionfit.sweep import load_sweep, setting_configs, sweep_names

    if args.list:
        for name in sweep_names():
            print(f"{name}: {load_sweep(name).mirrors}")
        return 0
    if args.sweep is None:
        raise SystemExit("motionfit sweep: name a sweep or a sweep YAML file (motionfit sweep --list)")
    if args.config is not None and args.preset is not None:
        raise SystemExit(f"give a config file or --preset, not both (got {args.config} and {args.preset})")
    sweep = load_sweep(args.sweep)
    from motionfit.flows.sweep import SettingsFailed, sweep_flow
    from motionfit.storage.layout import normalised_root

    sweep_root = normalised_root(args.run_root or f"runs/sweeps/{sweep.name}")
    preset = None if args.config else args.preset or "tiny"
    settings = {key: value for key, value in _overrides(args).items() if key != "run_root"}
    runs = setting_configs(sweep, sweep_root, args.config, preset, settings)
    try:
        result = sweep_flow(sweep, runs, sweep_root)
    except SettingsFailed as failure:
        print(failure.markdown, end="")
        print(f"motionfit: error: {failure}", file=sys.stderr)
        return 1
    print(result["markdown"], end="")
    return 0


def cmd_stage(args: argparse.Namespace) -> int:
    args.start, args.until, args.only = None, None, args.stage
    return cmd_run(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from motionfit.config import load_config
    from motionfit.flows.pipeline import pipeline_flow
    from motionfit.tasks.data.synth import discard_other_dataset
    from motionfit.tasks.evaluation.report import render_report_for_terminal

    overrides = {"run_root": args.run_root}
    if args.seed is not None:
        overrides["runtime"] = {"seed": args.seed}
    config = load_config(preset=args.preset, overrides=overrides)
    if config.synth is not None and discard_other_dataset(Path(config.synth_root), config.synth):
        print(f"{config.synth_root} held the synthetic data set of another config: generating it anew")
    pipeline_flow(config, wait=args.wait)
    print(render_report_for_terminal(config.run_root))
    print(f"\nrun root: {config.run_root} (report.md, plots/, metrics.parquet)")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from motionfit.status import render_status

    print(render_status(args.run_root))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Check every committed array against its commit; ``--repair`` uncommits the damaged ones."""
    from motionfit.storage.layout import ARRAY_STORES, RunLayout
    from motionfit.storage.manifest import (
        load_manifest,
        manifest_exists,
        refresh_stage_status,
        save_manifest,
        status_column,
    )
    from motionfit.storage.verify import uncommit_damaged, verify_store

    layout = RunLayout.at(args.run_root)
    checked, found = 0, []
    for name, (_, stage, _, _) in ARRAY_STORES.items():
        store = layout.store(name)
        checked += len(store.committed_ids())
        damaged = verify_store(store, read_data=not args.quick)
        found += damaged
        if args.repair and damaged:
            uncommit_damaged(store, damaged)
            if manifest_exists(layout):
                manifest = load_manifest(layout)
                column = status_column(stage)
                asked = list(manifest.loc[manifest[column].notna(), "video_id"]) if column in manifest else []
                save_manifest(layout, refresh_stage_status(manifest, store.markers, asked))
    for damage in found:
        print(f"{damage.path}: {damage.problem}")
    stores = ", ".join(group for group, *_ in ARRAY_STORES.values())
    print(f"{checked} committed arrays ({stores}) checked: {len(found)} damaged")
    if found and args.repair:
        print("uncommitted them: the next run recomputes exactly these videos")
    return 1 if found and not args.repair else 0


def cmd_report(args: argparse.Namespace) -> int:
    from motionfit.tasks.evaluation.report import render_report_for_terminal

    print(render_report_for_terminal(args.run_root))
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from motionfit.config import load_config
    from motionfit.tasks.data.synth import generate_dataset

    config = load_config(preset=args.preset)
    if config.synth is None:
        raise SystemExit(f"preset {args.preset!r} has no synthetic data set section")
    synth = config.synth if args.seed is None else config.synth.model_copy(update={"seed": args.seed})
    summary = generate_dataset(Path(args.out), synth)
    print(summary)
    return 0


def cmd_idt(args: argparse.Namespace) -> int:
    import numpy as np

    from motionfit.tasks.idt.config import IdtConfig
    from motionfit.tasks.idt.extractor import extract_video_trajectories

    config = IdtConfig(mode=args.mode)
    result = extract_video_trajectories(Path(args.video), config, boxes_path=args.boxes)
    np.save(args.output, result.trajectories.astype(np.float32))
    print(f"{len(result.trajectories)} trajectories x 436 -> {args.output}")
    return 0


def cmd_flow(args: argparse.Namespace) -> int:
    import numpy as np

    from motionfit.tasks.data.config import DecodeConfig
    from motionfit.tasks.data.decode import decode_video
    from motionfit.tasks.motion.config import FlowConfig
    from motionfit.tasks.motion.tvl1 import compute_tvl1_flow, flow_backend

    decode = DecodeConfig(short_side=args.short_side, max_frames=args.max_frames)
    frames = decode_video(Path(args.video), decode).frames
    config = FlowConfig(backend=args.backend, device=args.device)
    flow = compute_tvl1_flow(frames, config)
    np.save(args.output, flow)
    size = f"{flow.shape[1]}x{flow.shape[2]}"
    print(f"{len(flow)} flow fields of {size} px ({flow_backend(config)}) -> {args.output}")
    return 0


def _add_wait_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait", action="store_true", help="wait for another run that uses the run root (default: refuse)"
    )


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="YAML config file (default: --preset tiny)")
    parser.add_argument("--preset", help="tiny, demo, small, ucf101, hmdb51, kinetics")
    parser.add_argument("--seed", type=int, help="global seed (runtime.seed)")
    parser.add_argument("--run-root", help="run root: local path or fsspec URL (s3://bucket/run)")
    parser.add_argument(
        "--overlay", action="append", type=Path, help="YAML merged over the config (repeatable)"
    )
    parser.add_argument(
        "--set", action="append", metavar="SECTION.FIELD=VALUE", help="override a config field"
    )


def build_parser() -> argparse.ArgumentParser:
    from motionfit.config import STAGES

    parser = argparse.ArgumentParser(prog="motionfit", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="the whole pipeline on the bundled synthetic data set")
    demo.add_argument("--run-root", default=DEMO_RUN_ROOT)
    demo.add_argument("--preset", default="demo")
    demo.add_argument("--seed", type=int)
    _add_wait_argument(demo)
    demo.set_defaults(handler=cmd_demo)

    run = commands.add_parser("run", help="run the pipeline (resumes: finished work is skipped)")
    _add_config_arguments(run)
    run.add_argument("--from", dest="start", choices=STAGES, help="start at this stage")
    run.add_argument("--until", choices=STAGES, help="stop after this stage")
    run.add_argument("--only", choices=STAGES, help="run this stage alone")
    _add_wait_argument(run)
    run.set_defaults(handler=cmd_run)

    stage = commands.add_parser("stage", help="run one stage")
    stage.add_argument("stage", choices=STAGES)
    _add_config_arguments(stage)
    _add_wait_argument(stage)
    stage.set_defaults(handler=cmd_stage)

    sweep = commands.add_parser("sweep", help="run a sweep of settings into one comparison table")
    sweep.add_argument("sweep", nargs="?", help="a shipped sweep's name or a sweep YAML file")
    sweep.add_argument(
        "--list", action="store_true", help="list the shipped sweeps and the tables they mirror"
    )
    sweep.add_argument("--config", help="YAML config file of every setting (default: --preset tiny)")
    sweep.add_argument("--preset", help="preset of every setting")
    sweep.add_argument("--run-root", help="the sweep's root (default: runs/sweeps/<name>)")
    sweep.add_argument(
        "--set", action="append", metavar="SECTION.FIELD=VALUE", help="override a field of every setting"
    )
    sweep.set_defaults(handler=cmd_sweep)

    config = commands.add_parser("config", help="print the resolved config as YAML (validated)")
    _add_config_arguments(config)
    config.set_defaults(handler=cmd_config)

    status = commands.add_parser("status", help="stages and videos per status of a run")
    status.add_argument("run_root")
    status.set_defaults(handler=cmd_status)

    verify = commands.add_parser("verify", help="check committed arrays against their commits")
    verify.add_argument("run_root")
    verify.add_argument(
        "--repair", action="store_true", help="uncommit damaged videos (the next run redoes them)"
    )
    verify.add_argument(
        "--quick", action="store_true", help="check files and chunks, not the data's checksums"
    )
    verify.set_defaults(handler=cmd_verify)

    report = commands.add_parser("report", help="print a run's result tables")
    report.add_argument("run_root")
    report.set_defaults(handler=cmd_report)

    synth = commands.add_parser("synth", help="write the synthetic motion data set")
    synth.add_argument("out", help="output folder")
    synth.add_argument("--preset", default="tiny")
    synth.add_argument("--seed", type=int)
    synth.set_defaults(handler=cmd_synth)

    idt = commands.add_parser("idt", help="Improved Dense Trajectories of one video (436 columns per row)")
    idt.add_argument("video")
    idt.add_argument("--mode", default="reference", choices=["reference"], help="flow used for tracking")
    idt.add_argument("--boxes", type=Path, help="human boxes per frame (the reference's format)")
    idt.add_argument("-o", "--output", required=True, help="output .npy")
    idt.set_defaults(handler=cmd_idt)

    flow = commands.add_parser(
        "flow", help="TV-L1 flow of one video: float32 [T-1, H, W, 2] (dx, dy) in pixels, unclipped"
    )
    flow.add_argument("video")
    flow.add_argument("-o", "--output", required=True, help="output .npy")
    flow.add_argument("--backend", default="auto", choices=["auto", "opencv", "torch"])
    flow.add_argument("--device", help="torch backend's device (default: cuda when present)")
    flow.add_argument("--max-frames", type=int, help="decode at most this many frames")
    flow.add_argument("--short-side", type=int, default=128, help="resize to this short side first")
    flow.set_defaults(handler=cmd_flow)
    return parser


class _WithoutTracebacks(logging.Filter):
    """Drops the records of Prefect's flow and task engines that carry a traceback: the command reports a
    failure once itself (the traceback with ``--verbose``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.exc_info is None


WITHOUT_TRACEBACKS = _WithoutTracebacks()


def main(argv: list[str] | None = None) -> int:
    _prefect_defaults()
    args = build_parser().parse_args(argv)
    level = logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(message)s")
    for handler in logging.getLogger().handlers:  # the terminal; the runs' logs in the UI keep INFO
        handler.setLevel(level)
    engines = [] if args.verbose else [logging.getLogger(f"prefect.{kind}_runs") for kind in ("flow", "task")]
    for engine in engines:
        engine.addFilter(WITHOUT_TRACEBACKS)
    try:
        return args.handler(args)
    except (ValueError, OSError) as error:  # bad config, data or files: the message says which
        if args.verbose:
            raise
        print(f"motionfit: error: {_message(error)}", file=sys.stderr)
        print(f"(motionfit -v {args.command} ... shows the traceback)", file=sys.stderr)
        return 2
    finally:
        for engine in engines:
            engine.removeFilter(WITHOUT_TRACEBACKS)


def _message(error: Exception) -> str:
    """The error as the command prints it: a config validation error as one line per invalid field."""
    from pydantic import ValidationError

    if not isinstance(error, ValidationError):
        return str(error)
    problems = [
        f"{'.'.join(str(part) for part in problem['loc']) or 'config'}: "
        f"{problem['msg'].removeprefix('Value error, ')}"
        for problem in error.errors()
    ]
    return "invalid config:\n" + "\n".join(f"- {problem}" for problem in problems)


if __name__ == "__main__":
    sys.exit(main())
