"""The ``relaxkd`` subcommands: one per stage, plus run, sweep, report, export, predict and validate.

cli.py runs them: signals, exit codes and one-line errors."""
from __future__ import annotations

from contextlib import nullcontext
from enum import Enum
from pathlib import Path

import typer

from relaxkd import __version__
from relaxkd.errors import UserError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Crossmodal knowledge distillation with WordNet-relaxed CLIP text embeddings.",
)
embed_app = typer.Typer(no_args_is_help=True, help="CLIP embeddings of images or WordNet nouns.")
app.add_typer(embed_app, name="embed")


def _print_version(value: bool) -> None:
    if not value:
        return
    import torch  # its own version string names the build (e.g. +cu130); the installed metadata does not

    typer.echo(f"relaxkd {__version__} (torch {torch.__version__})")
    raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                          help="print relaxkd's version and torch's, then exit")) -> None:
    pass


def _home(value):
    """Paths given as options or arguments follow the config's rule (schema.UserPath): ``~`` expanded."""
    from relaxkd.schema import expand_home

    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return [_home(v) for v in value]
    try:
        return Path(expand_home(str(value)))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


ConfigArg = typer.Argument(..., help="experiment YAML, e.g. configs/demo.yaml", callback=_home)
OverridesArg = typer.Argument(None, help="key=value overrides, e.g. distill.temperature=3")


def _config(config: Path, overrides: list[str] | None):
    """The validated config, and the environment it needs (a launcher for several nodes)."""
    from relaxkd.config import load_config
    from relaxkd.engine.launch import check_launcher

    cfg = load_config(config, overrides or [])
    check_launcher(cfg.trainer)
    return cfg


def _context(config: Path, overrides: list[str] | None):
    cfg = _config(config, overrides)  # before torch's import (stages.context): a bad config is answered at once
    from relaxkd.stages.context import Context

    return Context(cfg)


def _locked(ctx):
    """Exclusive use of the run directory (not in DDP workers, which share the parent's)."""
    from relaxkd.artifacts import run_lock
    from relaxkd.engine.launch import is_main_process

    return run_lock(ctx.cfg.run_dir) if is_main_process() else nullcontext()


def _run_stage(config: Path, overrides: list[str] | None, stage: str, arg: str | None = None):
    """The artifact of the stage named ``stage`` (its record's name), under the run lock; inputs
    missing are built first. The stages are imported after the config is validated."""
    ctx = _context(config, overrides)
    from relaxkd.stages.graph import Node, artifact, check_stage

    check_stage(stage)
    with _locked(ctx):
        return artifact(ctx, Node(stage, arg))


def _say(line: str) -> None:
    typer.echo(line)


@embed_app.command("images")
def embed_images(config: Path = ConfigArg, overrides: list[str] | None = OverridesArg) -> None:
    """CLIP image embeddings of the training and validation sets."""
    from relaxkd.stages import embed_images as stage

    art = _run_stage(config, overrides, stage.STAGE)
    _say(f"image embeddings: {art.file('embeddings.safetensors')}")


@embed_app.command("nouns")
def embed_nouns(config: Path = ConfigArg, overrides: list[str] | None = OverridesArg) -> None:
    """CLIP text embeddings of the candidate WordNet nouns (shared by all datasets)."""
    from relaxkd.stages import embed_nouns as stage

    art = _run_stage(config, overrides, stage.STAGE)
    _say(f"noun embeddings: {art.file('embeddings.safetensors')}")


@app.command()
def relax(config: Path = ConfigArg, overrides: list[str] | None = OverridesArg) -> None:
    """Algorithm 1: select WordNet-relaxed nouns per image cluster (the relaxed bank)."""
    from relaxkd.stages import relax as stage

    art = _run_stage(config, overrides, stage.STAGE)
    _say(art.file("nouns.txt").read_text().rstrip())  # the per-cluster noun listing
    _say(f"relaxed bank: {art.file('bank.safetensors')}")
    _say(f"nouns per cluster: {art.file('nouns.txt')}")


class TeacherKind(str, Enum):
    unimodal = "unimodal"
    multimodal = "multimodal"


class Aug(str, Enum):
    strong = "strong"
    weak = "weak"


@app.command()
def teacher(
    config: Path = ConfigArg,
    overrides: list[str] | None = OverridesArg,
    kind: TeacherKind = typer.Option(TeacherKind.multimodal, help="unimodal (T_m member) or multimodal (T_x)"),
    member: str | None = typer.Option(None, help="unimodal member name from the config"),
    aug: Aug | None = typer.Option(None, help="unimodal augmentation (picks or adds a member)"),
    seed: int = typer.Option(0, help="unimodal member seed, with --aug"),
) -> None:
    """Train a teacher: a unimodal ResNet (T_m member) or the multimodal teacher T_x."""
    ctx = _context(config, overrides)
    from relaxkd.stages.multimodal import multimodal_teacher
    from relaxkd.stages.unimodal import unimodal_teacher

    with _locked(ctx):
        if kind == TeacherKind.multimodal:
            art = multimodal_teacher(ctx)
        else:
            name = member or _member_for(ctx, aug.value if aug else "strong", seed)
            art = unimodal_teacher(ctx, name)
    _report_metrics(art)


def _member_for(ctx, aug: str, seed: int) -> str:
    from relaxkd.config import UnimodalMember

    for m in ctx.cfg.unimodal.members:
        if m.aug == aug and m.seed == seed:
            return m.name
    name = f"{aug}-seed{seed}"
    ctx.cfg.unimodal.members = [*ctx.cfg.unimodal.members, UnimodalMember(name=name, aug=aug, seed=seed)]
    return name


def _report_metrics(art) -> None:
    metrics = art.read_json("metrics.json")
    shown = ", ".join(f"{k} {metrics[k]:.2f}" for k in ("top1", "top5", "many_shot", "medium_shot", "few_shot") if k in metrics)
    _say(f"{art.stage}: {shown}")
    _say(f"artifact: {art.path}")


@app.command()
def distill(config: Path = ConfigArg, overrides: list[str] | None = OverridesArg) -> None:
    """Distil the student from the configured teachers (trains missing teachers first)."""
    from relaxkd.stages import distill as stage

    art = _run_stage(config, overrides, stage.STAGE)
    _report_metrics(art)


@app.command()
def attribute(config: Path = ConfigArg, overrides: list[str] | None = OverridesArg) -> None:
    """Integrated Gradients on T_x: image vs text attribution shares."""
    from relaxkd.stages import attribute as stage

    art = _run_stage(config, overrides, stage.STAGE)
    result = art.read_json("attribution.json")
    _say(f"image share {result['image_share']:.3f}, text share {result['text_share']:.3f}")
    _say(f"artifact: {art.path}")


@app.command("stage")
def stage_command(
    name: str = typer.Argument(..., help="a stage's name, e.g. teacher-multimodal (relaxkd graph lists a run's)"),
    config: Path = ConfigArg,
    overrides: list[str] | None = OverridesArg,
    arg: str | None = typer.Option(None, "--arg",
                                   help="which artifact of the stage: a teacher's name (teacher-unimodal, teacher-expert)"),
) -> None:
    """Any one stage by its record's name; inputs it finds missing are built first."""
    art = _run_stage(config, overrides, name, arg)
    _say(f"artifact: {art.path}")


@app.command("graph")
def graph_command(
    config: Path = ConfigArg,
    overrides: list[str] | None = OverridesArg,
    sweeps: bool = typer.Option(True, help="include the trials of the config's sweeps"),
) -> None:
    """The run's graph as JSON lines, inputs first: each artifact's id, stage, arg, inputs and the
    overrides that give its config (``relaxkd run --launcher slurm`` dispatches exactly these nodes)."""
    import json

    from relaxkd.stages.plan import graph

    for node in graph(_context(config, overrides), sweeps=sweeps):
        _say(json.dumps(node.to_dict()))


class Launcher(str, Enum):
    inline = "inline"
    local = "local"
    slurm = "slurm"


LauncherOpt = typer.Option(Launcher.inline, help="inline: here, one stage after another; slurm: one sbatch job per "
                           "missing artifact (dependencies, requeue); local: the same jobs run on this machine")
WaitOpt = typer.Option(False, "--wait",
                       help="with --launcher slurm: block until every job has ended (exit 0 only if all succeeded)")


def _launch(config: Path, overrides: list[str] | None, launcher: Launcher, wait: bool, command: list[str],
            family: str | None = None, trials: str | None = None) -> None:
    """Dispatch the run's or sweep's graph as jobs; the report job reruns ``command`` inline (all on disk by then)."""
    import sys

    from relaxkd.launch import dispatch

    ctx = _context(config, overrides)
    report_argv = [sys.executable, "-m", "relaxkd", command[0], str(config.resolve()), *(overrides or []), *command[1:]]
    failed = dispatch(ctx, launcher.value, wait, report_argv, _say, family, trials)
    for line in failed:
        typer.echo(f"error: {line}", err=True)
    if failed:
        raise typer.Exit(1)


@app.command()
def run(config: Path = ConfigArg, overrides: list[str] | None = OverridesArg, launcher: Launcher = LauncherOpt,
        wait: bool = WaitOpt) -> None:
    """The whole pipeline for one experiment, reusing every artifact that already exists."""
    if launcher != Launcher.inline:
        return _launch(config, overrides, launcher, wait, ["run"])
    ctx = _context(config, overrides)  # a bad config is answered before the stages' imports
    from relaxkd.report import write_report
    from relaxkd.stages.plan import run_experiment

    with _locked(ctx):
        report = run_experiment(ctx, then=[("report", lambda: write_report(ctx.cfg.run_dir))])
    _say(f"report: {report}")


@app.command()
def sweep(
    config: Path = ConfigArg,
    overrides: list[str] | None = OverridesArg,
    family: str = typer.Option("table2", help="trial family: table1, table2, table3, figure2"),
    trials: str | None = typer.Option(None, help="comma-separated trial names (default: all)"),
    print_commands: bool = typer.Option(False, "--print-commands", help="print one command per trial that will run "
                                        "(skipped ones as # comments saying why) and exit"),
    print_config: bool = typer.Option(False, "--print-config", help="print each selected trial's resolved config (YAML, "
                                      "with the KD method's resolved recipe) and exit; nothing runs"),
    launcher: Launcher = LauncherOpt,
    wait: bool = WaitOpt,
) -> None:
    """A family of trials (the paper's tables and figures) sharing artifacts."""
    from relaxkd.trials import select_trials

    if trials is not None and not [t for t in trials.split(",") if t.strip()]:
        raise UserError("--trials is empty; name trials (comma-separated) or leave the option out to run them all")
    if print_commands:
        ctx = _context(config, overrides)
        from relaxkd.stages.plan import sweep_command_lines

        for line in sweep_command_lines(ctx, config, overrides or [], family, trials):
            _say(line)
        return
    if print_config:
        from relaxkd.config import load_config
        from relaxkd.stages.plan import trial_config_text

        _say(trial_config_text(load_config(config, overrides or []), family, trials))
        return
    select_trials(family, trials)  # reject unknown names before any work
    if launcher != Launcher.inline:
        chosen = ["--trials", trials] if trials is not None else []
        return _launch(config, overrides, launcher, wait, ["sweep", "--family", family, *chosen], family, trials)
    ctx = _context(config, overrides)  # a bad config is answered before the stages' imports
    from relaxkd.report import write_report
    from relaxkd.stages.plan import run_sweep

    with _locked(ctx):
        run_sweep(ctx, family, trials)
        report_path = write_report(ctx.cfg.run_dir)
    _say(f"report: {report_path}")


@app.command()
def status(
    run_dir: Path = typer.Argument(..., help="a run directory whose graph was launched, e.g. runs/demo"),
    wait: bool = typer.Option(False, "--wait", help="block until every job has ended; exit 0 only if all succeeded"),
) -> None:
    """Each job of a launched graph: done, running, queued, failed or cancelled, with its job id and log."""
    from relaxkd.launch.status import failed_lines, format_status, graph_status
    from relaxkd.launch.status import wait as wait_for_end

    statuses = wait_for_end(run_dir, lambda line: typer.echo(line, err=True)) if wait else graph_status(run_dir)
    for line in format_status(statuses):
        _say(line)
    broken = failed_lines(statuses)
    if broken:  # after --wait nothing is queued or running: every other job is done
        for line in broken:
            typer.echo(f"error: {line}", err=True)
        raise typer.Exit(1)


@app.command("build-node", hidden=True)
def build_node(
    config: Path = ConfigArg,
    stage: str = typer.Option(..., help="the node's stage"),
    arg: str | None = typer.Option(None, help="which artifact of the stage (a teacher's name)"),
    expect: str | None = typer.Option(None, help="the <stage>-<key> the job was planned to build"),
) -> None:
    """One node of a launched graph, built alone from its inputs on disk (what each job runs)."""
    from relaxkd.launch.graph import build_node as build

    art = build(config, stage, arg, expect)
    _say(f"artifact: {art.path}")


@app.command()
def report(run_dir: Path = typer.Argument(..., help="a run directory, e.g. runs/demo", callback=_home)) -> None:
    """Tables (Markdown, CSV) and figures (PNG) from the artifacts of a run directory."""
    from relaxkd.report import write_report

    _say(f"report: {write_report(run_dir)}")


@app.command()
def export(
    config: Path = ConfigArg,
    overrides: list[str] | None = OverridesArg,
    out: Path = typer.Option(Path("export"), help="output directory", callback=_home),
    format: str = typer.Option("torchscript", help="torchscript or onnx (safetensors is always written)"),
    artifact: Path | None = typer.Option(None, help="a distill-* artifact directory (default: the newest)", callback=_home),
) -> None:
    """Export the trained student: safetensors + TorchScript or ONNX."""
    ctx = _context(config, overrides)  # the config's errors before the export's imports
    from relaxkd.stages.export import export_student

    for path in export_student(ctx, out, format, artifact):
        _say(f"wrote {path}")


@app.command()
def predict(
    images: list[Path] = typer.Argument(..., help="image files", callback=_home),
    model: Path = typer.Option(..., help="folder written by `relaxkd export`, or its student.torchscript.pt / student.onnx file",
                               callback=_home),
    top: int = typer.Option(1, min=1, help="how many classes to print per image (at least 1)"),
) -> None:
    """Classify image files with an exported student."""
    from relaxkd.stages.predict import predict_files

    for line in predict_files(model, images, top):
        _say(line)


@app.command("validate")
def validate(config: Path = ConfigArg, overrides: list[str] | None = OverridesArg) -> None:
    """Validate a config (keys, values, registry names, the paths it names) and print the resolved YAML."""
    import yaml

    from relaxkd.config import load_config
    from relaxkd.engine.launch import check_launcher
    from relaxkd.preflight import check_names, check_paths

    cfg = load_config(config, overrides or [])
    check_launcher(cfg.trainer)
    check_names(cfg)  # without importing torch: validate answers in well under 2 s
    check_paths(cfg)
    _say(yaml.safe_dump(cfg.to_dict(), sort_keys=False).rstrip())
