"""Assets of the 0.x example: archives in the 0.x layout (one script, no function name on the
ENTRYPOINT), written for substratools 1.0 with the identifiers the 0.x surface declares.

The opener and the data generator are the shared ones of :mod:`examples.assets`.
"""

from __future__ import annotations

from pathlib import Path

from substra_flows.legacy.archives import Member, write_targz

LEGACY_DIR = Path(__file__).resolve().parent
SCRIPTS = ("algo", "aggregate_algo", "composite_algo", "metrics")


def dockerfile(script: str, variant: str = "") -> str:
    """A 0.x-style Dockerfile: the ENTRYPOINT runs the script; the platform chose the method.

    ``variant`` adds a comment line: a different archive (checksum) with the same behaviour.
    """
    return (
        (f"# {variant}\n" if variant else "") + "FROM python:3.11-slim\n"
        "RUN pip install substratools==1.0.0\n"
        f"COPY {script}.py logreg.py ./\n"
        f'ENTRYPOINT ["python3", "{script}.py"]\n'
    )


def build_archive(script: str, dest_dir: Path, variant: str = "") -> Path:
    """``<dest_dir>/<script>.tar.gz`` (Dockerfile, the script, logreg.py); same arguments, same bytes."""
    if script not in SCRIPTS:
        raise ValueError(f"unknown 0.x example script {script!r}; expected one of {SCRIPTS}")
    entries = {
        "Dockerfile": dockerfile(script, variant).encode(),
        f"{script}.py": (LEGACY_DIR / f"{script}.py").read_bytes(),
        "logreg.py": (LEGACY_DIR / "logreg.py").read_bytes(),
    }
    members = [Member(name, entries[name], 0o644) for name in sorted(entries)]
    return write_targz(members, Path(dest_dir) / f"{script}.tar.gz")


def write_description(dest: Path, title: str) -> Path:
    """A small Markdown description (its content is the identity of a 0.x objective)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(f"# {title}\n\nA 0.x example asset of substra-flows.\n", encoding="utf-8")
    return dest


def opener_copy(dest: Path, variant: str) -> Path:
    """The shared example opener with a comment line: another opener file (checksum), same behaviour."""
    from examples import assets

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(f"# {variant}\n".encode() + assets.opener_path().read_bytes())
    return dest
