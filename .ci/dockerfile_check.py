#!/usr/bin/env python3
"""Static checks of the Dockerfile, since no Docker engine runs in CI (hadolint runs beside
this for general lint). Asserts the facts the deployment relies on:
  - multi-stage: a rust builder on Cargo.toml's rust-version, a distroless :nonroot runtime,
    every external base image pinned by digest (`FROM image:tag@sha256:<64 hex>`);
  - every build is `cargo auditable build` (the binary records its crates for scanners), with
    cargo-auditable installed in the builder stage at a pinned version, and is
    `--profile dist` --locked --no-default-features (no sandbox shipped), the binary copied from
    target/dist/, and Cargo.toml's `dist` profile has LTO and strips symbols;
  - the final stage runs as 65532:65532, exposes the LISTEN_ADDR / METRICS_ADDR ports of
    k8s/base/config.env, has an exec-form ENTRYPOINT, the OCI labels, and no HEALTHCHECK;
  - everything the release build reads is copied and allowed by .dockerignore: Cargo.toml,
    Cargo.lock, src/, build.rs if any, and non-test include_str!/include_bytes!/include! paths.
Usage: dockerfile_check.py (from anywhere; paths are relative to the repository)
"""
import fnmatch
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
errors = []


def check(cond, msg):
    if not cond:
        errors.append(msg)


def instructions(text: str):
    """(KEYWORD, args) per instruction, continuation lines joined, comments dropped."""
    out, buf = [], ""
    for line in text.splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):  # comment inside a continued instruction
            continue
        buf += line.rstrip("\\").rstrip() + " " if line.rstrip().endswith("\\") else line
        if not line.rstrip().endswith("\\"):
            kw, _, args = buf.strip().partition(" ")
            out.append((kw.upper(), args.strip()))
            buf = ""
    return out


def needed_paths():
    """Top-level paths a `cargo build --release` reads."""
    paths = {"Cargo.toml", "Cargo.lock", "src"}
    manifest = tomllib.loads((ROOT / "Cargo.toml").read_text())
    build = manifest.get("package", {}).get("build")
    if build or (ROOT / "build.rs").exists():
        paths.add(build if isinstance(build, str) else "build.rs")
    for target in [manifest.get("lib", {})] + manifest.get("bin", []):
        if target.get("path"):
            paths.add(Path(target["path"]).parts[0])
    include = re.compile(r"\binclude(?:_str|_bytes)?!\s*\(\s*\"([^\"]+)\"")
    # The image builds with --no-default-features: src/sandbox/ (behind the `sandbox` feature,
    # which lib.rs gates) is not compiled there, so what it includes is not needed.
    sandbox_gated = '#[cfg(feature = "sandbox")]\npub mod sandbox;' in (ROOT / "src/lib.rs").read_text()
    for f in (ROOT / "src").rglob("*.rs"):
        if sandbox_gated and f.is_relative_to(ROOT / "src/sandbox"):
            continue
        text = f.read_text()
        for m in include.finditer(text):
            # Test modules sit at the end of a file: an include after `#[cfg(test)]` is test-only.
            if "#[cfg(test)]" in text[: m.start()]:
                continue
            target = (f.parent / m.group(1)).resolve().relative_to(ROOT)
            paths.add(target.parts[0])
        for m in re.finditer(r"#\[path\s*=\s*\"([^\"]+)\"\]", text):
            paths.add((f.parent / m.group(1)).resolve().relative_to(ROOT).parts[0])
    return paths


def main() -> int:
    ins = instructions((ROOT / "Dockerfile").read_text())
    stages = [i for i, (kw, _) in enumerate(ins) if kw == "FROM"]
    check(len(stages) >= 2, "Dockerfile must be multi-stage")
    final = ins[stages[-1]:] if stages else []
    rust_version = tomllib.loads((ROOT / "Cargo.toml").read_text())["package"]["rust-version"]
    builder_from = ins[stages[0]][1] if stages else ""
    check(re.match(rf"rust:{re.escape(rust_version)}(?:\.\d+)?-slim-bookworm@", builder_from),
          f"builder must be rust:{rust_version}-slim-bookworm@sha256:... (Cargo.toml rust-version), got {builder_from}")
    check(final and re.fullmatch(r"gcr\.io/distroless/cc-debian12:nonroot@sha256:[0-9a-f]{64}", final[0][1]),
          f"runtime must be gcr.io/distroless/cc-debian12:nonroot@sha256:..., got {final[0][1] if final else None}")
    stage_names = {args.split()[-1].lower() for kw, args in ins if kw == "FROM" and " as " in args.lower()}
    for kw, args in ins:
        if kw != "FROM":
            continue
        image = [a for a in args.split() if not a.startswith("--")][0]
        if image.lower() in stage_names or image == "scratch":
            continue
        check(re.search(r"[^@]:[\w.-]+@sha256:[0-9a-f]{64}$", image),
              f"FROM {image}: pin by digest with its tag (image:tag@sha256:<digest>), so a rebuild gets the reviewed bytes")

    builder = ins[stages[0]:stages[1]] if len(stages) >= 2 else ins
    builds = [args for kw, args in ins if kw == "RUN" and re.search(r"cargo (?:auditable )?build", args)]
    check(builds, "no cargo build")
    for run in builds:
        check("cargo build" not in run,
              f"`{run}`: build with `cargo auditable build`, so the binary records its crates for scanners")
        for cmd in re.findall(r"cargo (?:auditable )?build[^&;|]*", run):
            for flag in ("--locked", "--no-default-features"):
                check(flag in cmd.split(), f"`{cmd.strip()}` lacks {flag}")
            check("--profile dist" in " ".join(cmd.split()),
                  f"`{cmd.strip()}`: build the image with `--profile dist` (LTO, stripped)")
    check(any("target/dist/finpass-gateway" in args for kw, args in ins if kw == "RUN"),
          "the image's binary is target/dist/finpass-gateway")
    dist = tomllib.loads((ROOT / "Cargo.toml").read_text()).get("profile", {}).get("dist", {})
    check(dist.get("lto") not in (None, False, "off") and dist.get("strip") == "symbols",
          f"Cargo.toml [profile.dist] must enable lto and strip = \"symbols\", got {dist}")
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for kw, a in builder if kw == "ARG" and "=" in a}
    installs = [a for kw, a in builder if kw == "RUN" and "cargo install cargo-auditable" in a]
    check(installs, "the builder stage must `cargo install cargo-auditable` (before the builds)")
    for run in installs:
        m = re.search(r"cargo install cargo-auditable (.*)", run)
        flags = m.group(1).split() if m else []
        version = flags[flags.index("--version") + 1] if "--version" in flags[:-1] else ""
        version = re.sub(r'^"?\$\{?(\w+)\}?"?$', lambda v: args.get(v.group(1), ""), version)
        check("--locked" in flags, f"`{run}` lacks --locked")
        check(re.fullmatch(r"=?\d+\.\d+\.\d+", version),
              f"`{run}`: pin cargo-auditable to an exact --version (got {version or 'none'})")
    first_install = next((i for i, (kw, a) in enumerate(ins) if kw == "RUN" and "cargo install cargo-auditable" in a), None)
    first_build = next((i for i, (kw, a) in enumerate(ins) if kw == "RUN" and "cargo auditable build" in a), None)
    check(first_install is None or first_build is None or first_install < first_build,
          "cargo-auditable must be installed before the first build")

    users = [args for kw, args in final if kw == "USER"]
    check(users and users[-1] == "65532:65532", f"final stage must end as USER 65532:65532, got {users}")
    check(not any(kw == "HEALTHCHECK" for kw, _ in ins), "no HEALTHCHECK (Kubernetes probes instead)")
    entry = [args for kw, args in final if kw == "ENTRYPOINT"]
    check(entry == ['["/usr/local/bin/finpass-gateway"]'], f"exec-form ENTRYPOINT, got {entry}")
    labels = " ".join(args for kw, args in final if kw == "LABEL")
    for key in ("source", "title", "description", "licenses"):
        check(f"org.opencontainers.image.{key}=" in labels, f"missing LABEL org.opencontainers.image.{key}")

    exposed = {p.split("/")[0] for kw, args in final if kw == "EXPOSE" for p in args.split()}
    env = dict(l.split("=", 1) for l in (ROOT / "k8s/base/config.env").read_text().splitlines()
               if l.strip() and not l.startswith("#"))
    for var in ("LISTEN_ADDR", "METRICS_ADDR"):
        port = env.get(var, ":").rsplit(":", 1)[1]
        check(port in exposed, f"EXPOSE lacks {var}'s port {port} (k8s/base/config.env)")

    copied = set()
    for kw, args in ins:
        if kw == "COPY" and "--from=" not in args:
            for src in args.split()[:-1]:
                copied.add(src.rstrip("/").removeprefix("./"))
    ignore = [l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines()
              if l.strip() and not l.startswith("#")]

    def in_context(path: str) -> bool:
        allowed = False  # last matching rule wins, as in Docker
        for rule in ignore:
            neg = rule.startswith("!")
            pat = rule.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, pat) or path.startswith(pat + "/"):
                allowed = neg
        return allowed

    for path in sorted(needed_paths()):
        check(path in copied, f"the build needs {path} but the Dockerfile does not COPY it")
        check(in_context(path), f"the build needs {path} but .dockerignore excludes it")
    for heavy in ("target", ".git", ".sandbox-data"):
        check(not in_context(heavy), f".dockerignore must exclude {heavy}")

    for e in errors:
        print(f"FAIL {e}")
    print(f"Dockerfile: {len(errors)} problems ({len(builds)} cargo build steps, copies {sorted(copied)})")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
