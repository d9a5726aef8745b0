"""The specs' verdicts as small pure functions: facts in, None (holds) or the failure message out.

A spec reads a fact from the system under test and asserts `not (why := check(...)), why`;
tests/test_specs_can_fail.py feeds each check a wrong fact and shows it fails, so no spec can
pass by construction. The expected values here are the documents' own (seed and section named).
"""
from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence

# ---- the documents' values ------------------------------------------------------------------
CT_NAME = "Template-VLLM-FP8"                   # seed 003 phase 1.1
CLONE_SOURCE = "901"                            # seed 003 phase 1.1, 3.1
CT_FEATURES = {"nvidia", "vllm"}                # seed 003 phase 1.1
UNIT_NAME = "vllm_model_server.service"         # seed 003 phase 3
FA_VERSION = "2"                                # seed 002: FA2 on Blackwell, never FA3
SAMPLER_ON = "1"                                # seed 003 phase 3.2: VLLM_USE_FLASHINFER_SAMPLER=1
DOC_CUDA = "12.8"                               # seed 000 step 2, seed 001 TR1, seed 003 6.2: torch cu128
DOC_TORCH_MIN = "2.9.0"                         # seed 001 section 1: a torch 2.9 nightly
DOC_VLLM = "0.10.2"                             # seed 003 3.2 / 6.2: the vLLM 0.10.2 wheel
DOC_FLASHINFER = "0.3.1"                        # seed 003 phase 2.2: FlashInfer v0.3.1
DOC_FLASHINFER_FALLBACK = "0.3.0"               # seed 003 section 7.1
DOC_PYTHON = "3.11"                             # seed 000 step 1: python3.11-full
DOC_GPU_ARCH = "12.0"                           # seed 002 G1, seed 004: an sm_120 GPU (RTX 50xx)


def unchanged(before, after, what: str) -> str | None:
    """A digest (or any state) read before the run equals the one read after it."""
    if before != after:
        return f"{what} changed during the run: {before!r} -> {after!r}"
    return None


def changed_keys(before: Mapping, after: Mapping, what: str) -> str | None:
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    return f"{what} changed during the run: {changed}" if changed else None


# ---- config (the declarative model the run was given) ----------------------------------------
def ct_name(name: str | None) -> str | None:
    return None if name == CT_NAME else f"container name is {name!r}; seed 003 phase 1.1 names it {CT_NAME!r}"


def clone_source(clone_from: str | None, known: Iterable[str]) -> str | None:
    if clone_from != CLONE_SOURCE:
        return f"clone source is {clone_from!r}; seed 003 clones CT {CLONE_SOURCE}"
    if CLONE_SOURCE not in set(known):
        return f"the config has no container {CLONE_SOURCE} to clone from"
    return None


def unique_ip_mac(me: tuple[str, str], others: Iterable[tuple[str, str]]) -> str | None:
    ip, mac = me
    dup = [o for o in others if o[0] == ip or o[1].upper() == mac.upper()]
    return f"IP/MAC {me} also used by {dup}" if dup else None


def features(have: Iterable[str]) -> str | None:
    missing = CT_FEATURES - set(have)
    return f"features lack {sorted(missing)} (have {sorted(have)})" if missing else None


def engine_config_sections(ec) -> str | None:
    """Seed 003 section 4: the four sections with the document's values."""
    if ec is None:
        return "no vllm_engine_config"
    got = {"model": ec.ModelConfig.model, "quantization": ec.CacheConfig.quantization,
           "kv_cache_dtype": ec.CacheConfig.kv_cache_dtype, "tensor_parallel_size": ec.ParallelConfig.tensor_parallel_size,
           "served_model_name": ec.ServerConfig.served_model_name}
    want = {"model": "meta-llama/Llama-3.2-3B-Instruct", "quantization": "fp8", "kv_cache_dtype": "fp8",
            "tensor_parallel_size": 2, "served_model_name": "llama-3.2-3b-fp8"}
    bad = {k: got[k] for k in want if got[k] != want[k]}
    return f"engine config differs from seed 003 section 4: {bad} (want {want})" if bad else None


def legacy_key_rejected(load, path, key: str, error_type: type) -> str | None:
    """Loading a config with a legacy flat key must raise `error_type` naming its JSON path."""
    try:
        load(path)
    except error_type as exc:
        if f"legacy key `{key}`" in str(exc):
            return None
        return f"the error does not name the legacy key `{key}`: {exc}"
    return f"a config with the legacy key `{key}` was accepted"


# ---- container ------------------------------------------------------------------------------
def container_running(now: Mapping, name: str, inside_hostname: str | None) -> str | None:
    if not now.get("exists"):
        return "the container does not exist"
    if not now.get("running"):
        return f"the container is not running: {dict(now)}"
    if now.get("hostname") != name:
        return f"host config hostname is {now.get('hostname')!r}, want {name!r}"
    if inside_hostname != name:
        return f"hostname inside is {inside_hostname!r}, want {name!r}"
    return None


def systemd_booted(pid1: str, state: str) -> str | None:
    if pid1 != "systemd":
        return f"PID 1 is {pid1!r}, not systemd"
    if state != "running":
        return f"systemctl is-system-running: {state!r}"
    return None


def resources(now: Mapping, want: Mapping) -> str | None:
    """Every desired key (cores, memory_mb, swap_mb, nesting, ...) as the host reports it."""
    bad = {k: (now.get(k), v) for k, v in want.items() if now.get(k) != v}
    return f"host reports (observed, config) {bad}" if bad else None


def memory_limit(limit_bytes: int | None, memory_mb: int) -> str | None:
    if limit_bytes is None:
        return None
    want = memory_mb * 1024 * 1024
    return None if limit_bytes == want else f"the container's cgroup says {limit_bytes} bytes, want {want}"


def address_inside(mac: str, want_mac: str, addrs: Sequence[str], want_ip: str) -> str | None:
    if mac.upper() != want_mac.upper():
        return f"MAC inside is {mac}, config {want_mac}"
    if want_ip not in addrs:
        return f"{want_ip} not among the addresses inside {list(addrs)}"
    return None


_PCT_BASE = re.compile(r"\bbase-(\d+)-disk-\d+/")
_LXC_OVERLAY = re.compile(r"^lxc\.rootfs\.path\s*=\s*overlay(?:fs)?:/\S*?/([^/:\s]+)/rootfs:", re.M)


def clone_trace(config_text: str) -> str | None:
    """The source a linked clone still points at: a pct rootfs on `base-901-disk-0/...`, or an LXC
    overlay rootfs over `/var/lib/lxc/NAME/rootfs`. A full copy leaves no trace (None)."""
    m = _PCT_BASE.search(config_text) or _LXC_OVERLAY.search(config_text)
    return m.group(1) if m else None


def cloned_from(trace: str | None, want: str) -> str | None:
    if trace is None:
        return None
    return None if trace == want or trace.endswith(f"-{want}") else f"the rootfs is a clone of {trace}, not {want}"


def first_run_created(status: str, systemd_ready: bool | None) -> str | None:
    if status != "changed":
        return f"the container step reported {status!r}, not a creation"
    return None if systemd_ready else "systemd was not ready after the creation"


def gpu_nodes(missing_lines: Sequence[str], not_char: Sequence[str], host_driver: str, inside_driver: str) -> str | None:
    if missing_lines:
        return f"passthrough lines missing from the container config: {list(missing_lines)}"
    if not_char:
        return f"not character devices inside: {list(not_char)}"
    if host_driver.split() != inside_driver.split():
        return f"driver inside {inside_driver!r} differs from the host's {host_driver!r}"
    return None


# ---- toolchain / torch / vllm ---------------------------------------------------------------
def venv_prefix(prefix: str, base: str, want: str) -> str | None:
    if prefix != want:
        return f"sys.prefix is {prefix}, want {want}"
    return f"{want} is not a virtual environment (prefix == base_prefix)" if prefix == base else None


def python_version(venv: str, profile_python: str, floor: tuple[int, ...] = (3, 10)) -> str | None:
    if venv != profile_python:
        return f"venv python {venv}, profile python {profile_python}"
    return None if tuple(int(x) for x in venv.split(".")) >= floor else f"python {venv} is older than {floor}"


def tool_version(text: str, floor: tuple[int, ...], tool: str) -> str | None:
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not m:
        return f"{tool}: no version in {text[:80]!r}"
    version = tuple(int(x) for x in m.groups(default="0"))
    return None if version[: len(floor)] >= floor else f"{tool} {version} < {floor}"


def torch_cuda(cuda: str | None, want: str | None, version: str) -> str | None:
    return None if cuda == want else f"torch {version} reports CUDA {cuda}, want {want}"


def torch_nightly(version: str, min_version: str, nightly: bool) -> str | None:
    from provisioners.facts import version_tuple

    if version_tuple(version) < version_tuple(min_version):
        return f"torch {version} is older than {min_version}"
    if nightly and ".dev" not in version:
        return f"torch {version} is not a nightly"
    return None


def torch_from_nightly_cu(version: str, cuda_label: str = "cu128") -> str | None:
    """A nightly-index build says so in its version: `2.10.0.dev20250901+cu128`."""
    if ".dev" not in version:
        return f"torch {version} is not a nightly build"
    return None if version.endswith("+" + cuda_label) else f"torch {version} is not a +{cuda_label} build"


def release(version: str | None) -> str:
    return (version or "").split("+")[0]


def pip_unmet(result: Mapping, only: str | None = None) -> list[tuple[str, str, str]]:
    """(requirer, missing or mismatched requirement, pip's line) of each broken requirement; `only` keeps the
    lines where that distribution is either side (the torch step answers for torch's lines, not vLLM's)."""
    from provisioners.facts.pins import PipCheck
    out = [(*pair, ln) for ln in result.get("lines") or [] if (pair := PipCheck.unmet(ln))]
    return [u for u in out if only is None or only in u[:2]]


def pip_check_clean(result: Mapping, only: str | None = None) -> str | None:
    """`pip check` exit 0 (or no broken line about `only`); else pip's own lines ("vllm 0.10.2 has requirement
    torch==2.8.0, but you have ...")."""
    if result.get("ok"):
        return None
    if only is not None and result.get("rc") == 1 and not pip_unmet(result, only):
        return None
    scoped = only is not None and result.get("rc") == 1
    lines = [u[2] for u in pip_unmet(result, only)] if scoped else result.get("lines")
    return f"pip check (exit {result.get('rc')}): " + "; ".join(lines or ["no output"])


def left_to_later_layers(result: Mapping, names: Collection[str]) -> tuple[dict, list[str]]:
    """pip check as one layer sees it, before the layers after it ran: a requirement that a later layer of this run
    installs ("vllm 0.26.0 requires flashinfer-python, which is not installed." before the FlashInfer layer) is
    that layer's own pip check's to answer. Returns the result without those lines (exit 1 with nothing else
    left reads as clean) and the lines left to later layers. Only "not installed" lines move: a later layer's
    distribution present at another version is this layer's conflict."""
    later = [u[2] for u in pip_unmet(result) if u[1] in names and u[2].rstrip().endswith("which is not installed.")]
    if not later:
        return dict(result), []
    lines = [ln for ln in result.get("lines") or [] if ln not in later]
    return {**result, "lines": lines, "ok": bool(result.get("ok")) or (result.get("rc") == 1 and not lines)}, later


def names_within(observed: str, allowed: str) -> bool:
    """Every name of `observed` ("a, b") is one of `allowed` ("a, b, c"; "none" is no name)."""
    names = lambda s: {n.strip() for n in str(s).split(",") if n.strip() and n.strip() != "none"}  # noqa: E731
    return names(observed) <= names(allowed)


def pip_check_deviation(result: Mapping, expect, why: str, *, only: str | None = None) -> None:
    """After pip_check_clean said `why`: a *deviation* when each unmet requirement is one the active profile
    declares for the spec's ids (a substitute whose value lists the names, e.g. kernels an offline wheelhouse
    leaves out on purpose); else AssertionError(why), pip's own lines."""
    __tracebackhide__ = True
    from provisioners.facts.pins import PipCheck
    unmet = ", ".join(sorted({u[1] for u in pip_unmet(result, only)}))
    unread = [ln for ln in result.get("lines") or [] if PipCheck.unmet(ln) is None]
    if not unmet or result.get("rc") != 1 or unread:          # a line it cannot read is never a deviation
        raise AssertionError(why)
    try:
        expect(None, unmet, document="none", what="pip check's unmet requirements", compare=names_within)
    except AssertionError:
        raise AssertionError(why) from None


def torch_is_the_pin(torch_version: str | None, pin: str | None, source: str) -> str | None:
    """The venv's torch is exactly the release the vLLM wheel pins (R003-3.2-conflict-wheel-pins-torch)."""
    if pin is None:
        return f"{source} pins no exact torch, so the wheel path has no torch to follow"
    if release(torch_version) != pin:
        return f"torch {torch_version} is in the venv, but {source} requires torch=={pin}"
    return None


def vllm_version(printed: str, want: str, what: str = "`vllm --version`") -> str | None:
    return None if release(printed) == want else f"{what} printed {printed!r}, want {want}"


def dist_from_wheel(pip_show: Mapping[str, str], direct_url: Mapping | None, want: str) -> str | None:
    """pip's own record: the version, no editable checkout, and no local source dir behind it."""
    if release(pip_show.get("Version")) != want:
        return f"pip show says {pip_show.get('Version')!r}, want {want}"
    if "Editable project location" in pip_show:
        return f"vllm is an editable install of {pip_show['Editable project location']}"
    if direct_url and "dir_info" in direct_url:
        return f"vllm was built from the source folder {direct_url.get('url')}, not installed from a wheel"
    return None


def flags_known(flags: Iterable[str], help_text: str) -> str | None:
    unknown = [f for f in flags if f not in help_text]
    return f"flags the installed vLLM does not know: {unknown}" if unknown else None


def only_venv_vllm(system_imports: bool, dist_infos: Iterable[str], venv: str) -> str | None:
    if system_imports:
        return "the system python imports a vllm (a legacy install outside the venv)"
    outside = [p for p in dist_infos if not p.startswith(venv.rstrip("/") + "/")]
    return f"vllm dist-info outside {venv}: {outside}" if outside else None


# ---- service --------------------------------------------------------------------------------
def service_running(status: Mapping) -> str | None:
    if (status.get("active"), status.get("sub")) != ("active", "running") or not status.get("main_pid"):
        return f"service is not active/running with a main pid: {dict(status)}"
    return None


def restarts_since_deploy(status: Mapping, deployed: Mapping | None) -> str | None:
    """No restart by the service manager since the last deploy (seed 003 6.3). `status["restarts"]` is the
    manager's own counter (systemd's NRestarts, phoenix-supervise's count); `deployed` is the record the
    service step wrote at its last start: the counter then, and the restarts the suite injected on purpose.
    A counter below the deploy's (a reboot, a manual restart) counts from zero."""
    now = int(status.get("restarts") or 0)
    base = int((deployed or {}).get("restarts") or 0)
    injected = len((deployed or {}).get("injected") or []) if now >= base else 0
    crashes = (now - base if now >= base else now) - injected
    if crashes <= 0:
        return None
    since = f"the deploy at {deployed['at']}" if deployed and deployed.get("at") else "the service manager's start"
    return (f"{crashes} restart(s) by {status.get('manager', 'the service manager')} since {since}: restart count "
            f"{base} at deploy, {now} now" + (f", {injected} injected by the suite" if injected else "")
            + f"; the server died and was restarted (log: {status.get('log') or '?'})")


def unit_enabled(is_enabled: str, need_reload: str) -> str | None:
    if is_enabled != "enabled":
        return f"systemctl is-enabled: {is_enabled!r}"
    return None if need_reload == "no" else f"NeedDaemonReload={need_reload!r}"


def same_text(observed: str | None, wanted: str, what: str) -> str | None:
    if observed == wanted:
        return None
    if observed is None:
        return f"{what} is missing"
    diff = next((i for i, (a, b) in enumerate(zip(observed.splitlines(), wanted.splitlines(), strict=False)) if a != b), None)
    return f"{what} differs from the render of the config (first differing line {diff})"


def owner_mode(user: str, mode: int) -> str | None:
    return None if (user, mode) == ("root", 0o644) else f"owner {user}, mode {oct(mode)}; want root 0o644"


def argv_flags(argv: Sequence[str]) -> dict[str, str | bool]:
    """`vllm serve MODEL --a 1 --b --c x` -> {"model": MODEL, "--a": "1", "--b": True, "--c": "x"}."""
    out: dict[str, str | bool] = {}
    if "serve" in argv:
        rest = list(argv[argv.index("serve") + 1:])
        if rest and not rest[0].startswith("--"):
            out["model"] = rest.pop(0)
        i = 0
        while i < len(rest):
            a = rest[i]
            if a.startswith("--") and "=" in a:
                k, v = a.split("=", 1)
                out[k] = v
            elif a.startswith("--") and i + 1 < len(rest) and not rest[i + 1].startswith("--"):
                out[a] = rest[i + 1]
                i += 1
            elif a.startswith("--"):
                out[a] = True
            i += 1
    return out


# vLLM's own defaults: a field at its default may be left off the command line
VLLM_DEFAULTS = {"kv_cache_dtype": "auto", "dtype": "auto", "tensor_parallel_size": 1, "pipeline_parallel_size": 1}


def argv_has_values(argv: Sequence[str], want: Mapping[str, object]) -> str | None:
    """Each engine-config field the document sets, read back from the running process's argv
    (vLLM's own convention: field `max_model_len` is `--max-model-len`; a true bool is a bare flag)."""
    flags = argv_flags(argv)
    bad = {}
    for field, value in want.items():
        key = "model" if field == "model" else "--" + field.replace("_", "-")
        if value is None or (key not in flags and VLLM_DEFAULTS.get(field, object()) == value):
            continue
        key = "model" if field == "model" else "--" + field.replace("_", "-")
        got = flags.get(key)
        ok = (got is True) if value is True else (key not in flags) if value is False else (str(got) == str(value))
        if not ok:
            bad[field] = (got, value)
    return f"running argv (observed, engine config): {bad}" if bad else None


def env_has(env: Mapping[str, str], want: Mapping[str, str | None]) -> str | None:
    bad = {k: (env.get(k), v) for k, v in want.items() if env.get(k) != v}
    return f"process environment (observed, wanted): {bad}" if bad else None


def cleared_before_set(unit_text: str, keys: Iterable[str]) -> str | None:
    for key in keys:
        clear = unit_text.find(f'Environment="{key}="')
        if clear < 0:
            return f"the unit never clears {key}"
        later = [m.start() for m in re.finditer(rf'Environment="{key}=[^"]', unit_text)]
        if any(pos < clear for pos in later):
            return f"{key} is set before it is cleared"
    return None


def log_clean(log: str) -> str | None:
    from provisioners.facts.logscan import server_error_lines

    if "Application startup complete" not in log and "Started server process" not in log:
        return "the log does not show the server starting"
    errors = server_error_lines(log)      # whole lines; vLLM's per-request 404/400 records are not server errors
    return (f"{len(errors)} server error line(s) since the last start:\n" + "\n".join(errors[:10])) if errors else None


def fa2_only(env: Mapping[str, str], log: str) -> str | None:
    if env.get("VLLM_FLASH_ATTN_VERSION") != FA_VERSION:
        return f"VLLM_FLASH_ATTN_VERSION={env.get('VLLM_FLASH_ATTN_VERSION')!r}, want {FA_VERSION}"
    if re.search(r"(?i)flash.?attention.?(version )?3|FA3", log):
        return "the log shows FlashAttention 3"
    return None


def no_temp_leftovers(leftovers: Sequence[str]) -> str | None:
    return f"temp files left in /etc/systemd/system: {list(leftovers)}" if leftovers else None


# ---- flashinfer -----------------------------------------------------------------------------
def fallback_follows_trigger(trigger: str | None, deviations: Sequence[str]) -> str | None:
    if trigger is not None and not deviations:
        return f"the journal shows {trigger!r} but no FlashInfer fallback is recorded"
    return None


# ---- api / benchmark ------------------------------------------------------------------------
def model_listed(status: int, ids: Sequence[str], served: str) -> str | None:
    if status != 200:
        return f"GET /v1/models: {status}"
    return None if served in ids else f"{served} not in {list(ids)}"


def completion(status: int, usage: Mapping, finish: str | None, tokens: int) -> str | None:
    if status != 200:
        return f"status {status}"
    if usage.get("completion_tokens") != tokens:
        return f"completion_tokens {usage.get('completion_tokens')}, want {tokens}"
    return None if finish == "length" else f"finish_reason {finish!r}"


def top_k_applied(greedy: str, restricted: Sequence[str]) -> str | None:
    """top_k 1 leaves the sampler one token a step, whatever the temperature: each such completion is the greedy one."""
    if not restricted:
        return "no top_k 1 completion"
    off = [t for t in restricted if t != greedy]
    if off:
        return (f"top_k 1 at temperature 1 gave {off[0]!r}, greedy decoding {greedy!r}: the served sampler does not "
                "apply the request's top_k")
    return None


def chat(status: int, role: str | None, usage: Mapping) -> str | None:
    if status != 200:
        return f"status {status}"
    if role != "assistant":
        return f"role {role!r}"
    if not (usage.get("prompt_tokens", 0) > 1 and usage.get("completion_tokens", 0) >= 1):
        return f"usage {dict(usage)}"
    return None


def sse_chunks(chunks: int, floor: int = 2) -> str | None:
    return None if chunks >= floor else f"only {chunks} SSE data chunk(s)"


def error_reply(status: int, want: int, body: Mapping | None) -> str | None:
    if status != want:
        return f"status {status}, want {want}"
    return None if body and "error" in body else f"no `error` in the reply {body!r}"


def metric_series(series: Iterable[str]) -> str | None:
    s = set(series)
    return None if s & {"vllm:generation_tokens_total", "vllm:generation_tokens"} else \
        f"no vllm generation-token series in {sorted(s)[:20]}"


def bench_complete(result: Mapping, num_prompts: int) -> str | None:
    if result.get("completed") != num_prompts or result.get("failed", 0) != 0:
        return f"completed {result.get('completed')} of {num_prompts}, failed {result.get('failed')}"
    return None if (result.get("output_throughput") or 0) > 0 else "output throughput is 0"


def load_errors(results: Sequence[Mapping]) -> str | None:
    errors = [r for r in results if not r.get("ok")]
    return f"{len(errors)} of {len(results)} requests failed; first: {errors[:3]}" if errors else None


# ---- idempotence / ledger -------------------------------------------------------------------
def nothing_changed(results: Iterable) -> str | None:
    changed = [f"* {r.name} => {r.note}" for r in results if r.changed]
    return ("Idempotence test failed because of the following steps:\n" + "\n".join(changed)) if changed else None


def no_drift(drift: Sequence[str]) -> str | None:
    return f"drift: {list(drift)}" if drift else None


def in_order(names: Sequence[str], order: Sequence[str]) -> str | None:
    seen = [n for n in order if n in names]
    return None if seen == sorted(seen, key=list(names).index) else f"ledger order: {list(names)}"


def all_converged(first: Iterable, need: Iterable[str]) -> str | None:
    first = list(first)
    failed = [f"{r.name}: {r.error}" for r in first if r.status in ("failed", "drift")]
    if failed:
        return f"not converged: {failed}"
    missing = set(need) - {r.name for r in first}
    return f"layers never converged: {sorted(missing)}" if missing else None


def creation_time(total_s: float, build_s: float) -> str | None:
    if total_s > 55 * 60:
        return f"creation took {total_s / 60:.1f} min; seed 000 estimates 20-55 min"
    if total_s - build_s > 10 * 60:
        return f"non-build work took {(total_s - build_s) / 60:.1f} min; seed 000 says 5-10"
    return None


# ---- tls ------------------------------------------------------------------------------------
def same_fingerprint(served: str, installed: str | None) -> str | None:
    return None if installed and served == installed else "the served leaf is not the installed certificate"


def sans_and_window(info: Mapping, host: str, sans: Iterable[str], now, fraction: float) -> str | None:
    if host not in info["sans"] or not set(sans) <= set(info["sans"]):
        return f"SANs {info['sans']} lack {host} or {sorted(sans)}"
    if not info["not_before"] <= now < info["not_after"]:
        return f"not valid now: {info['not_before']} .. {info['not_after']}"
    return None if fraction > 1 / 3 else f"only {fraction:.0%} of the validity left: it should have been renewed"


# ---- small generic and layer-specific checks ------------------------------------------------
def equal(observed, wanted, what: str) -> str | None:
    return None if observed == wanted else f"{what}: observed {observed!r}, want {wanted!r}"


def on_path(found: bool, tool: str, where: str) -> str | None:
    return None if found else f"{tool} not on PATH of {where}"


def sharded(argv_tp: str | None, gpu_uuids: Iterable[str], tp: int) -> str | None:
    if argv_tp != str(tp):
        return f"--tensor-parallel-size is {argv_tp!r}, want {tp}"
    n = len(set(gpu_uuids))
    return None if n == tp else f"vLLM runs on {n} GPU(s), want {tp}"


def flashinfer_version(version: str | None, want: str, fallback_version: str | None,
                       deviations: Sequence[str]) -> str | None:
    """The tag's version, or (only with a recorded fallback) the fallback tag's version or the sampler off."""
    if release(version) == want:
        return None
    if not deviations:
        return f"flashinfer {version!r}, want {want}, and no fallback is recorded"
    if any("fallback 2" in d for d in deviations) or release(version) == fallback_version:
        return None
    return f"fallback state inconsistent: {list(deviations)} / {version!r}"


# ---- docker target --------------------------------------------------------------------------
def release_at_least(text: str, pattern: str, floor: tuple[int, ...], what: str) -> str | None:
    """The first `pattern` match's (major, minor) in a tool's output, against a floor."""
    m = re.search(pattern, text)
    if not m:
        return f"{what}: no version in {text[:200]!r}"
    got = tuple(int(x) for x in m.groups())
    return None if got >= floor else f"{what} {'.'.join(map(str, got))} < {'.'.join(map(str, floor))}"


def gpus_of_arch(rows: Sequence[Sequence[str]], arch: str, min_mib: int = 22888) -> str | None:
    """nvidia-smi rows (name, compute_cap, memory MiB): every GPU of `arch` with >= 24 GB (22888 MiB)."""
    if not rows:
        return "nvidia-smi lists no GPU"
    bad = [(name, cap, mem) for name, cap, mem in rows if cap != arch or int(mem) < min_mib]
    return f"GPUs not {arch} with >= {min_mib} MiB: {bad}" if bad else None


def nothing_left(items: Sequence, what: str) -> str | None:
    return f"{what}: {list(items)}" if items else None


def same_lines(observed: str, wanted: str, what: str) -> str | None:
    o, w = observed.strip().splitlines(), wanted.strip().splitlines()
    return None if o == w else f"{what}: {o} != {w}"


def guides(readme: str, names: Sequence[str], min_chars: int = 200) -> str | None:
    missing = []
    for guide in names:
        m = re.search(rf"^## {re.escape(guide)}\n(.+?)(?=^## |\Z)", readme, re.M | re.S)
        if not (m and len(m.group(1).strip()) > min_chars):
            missing.append(guide)
    return f"guides missing or empty: {missing}" if missing else None


def local_wheel_url(url: str) -> str | None:
    ok = re.fullmatch(r"file:///opt/phoenix/dist/[0-9a-f]{16}/vllm-[^/]+\.whl", url or "")
    return None if ok else f"vllm was not installed from the locally built wheel: direct_url {url!r}"


ENGINE_FIELDS_ON_ARGV = ("model", "max_model_len", "trust_remote_code", "quantization", "kv_cache_dtype",
                         "gpu_memory_utilization", "tensor_parallel_size", "served_model_name", "host", "port")


def engine_values(ec) -> dict[str, object]:
    """The engine config's own field values that reach `vllm serve` as flags (seed 003 section 4)."""
    out: dict[str, object] = {}
    for section in ("ModelConfig", "CacheConfig", "ParallelConfig", "ServerConfig"):
        for k, v in getattr(ec, section).model_dump().items():
            if k in ENGINE_FIELDS_ON_ARGV and isinstance(v, (str, int, float, bool)):
                out[k] = v
    return out


def os_release(text: str | None, distro: str, version: str, where: str) -> str | None:
    fields = dict(line.split("=", 1) for line in (text or "").splitlines() if "=" in line)
    got = (fields.get("ID", "").strip('"'), fields.get("VERSION_ID", "").strip('"'))
    return None if got == (distro, version) else f"{where} is {got}, want {(distro, version)}"


def compose_has_vllm_no_triton(services: Mapping[str, str], image: str) -> str | None:
    if "vllm" not in services:
        return f"compose defines no vllm service: {dict(services)}"
    if services["vllm"] != image and not services["vllm"].endswith(image.split("/", 1)[-1]):
        return f"the vllm service runs {services['vllm']}, not {image}"
    triton = [i for i in services.values() if "tritonserver" in i]
    return f"compose still runs Triton: {triton}" if triton else None


# ---- vLLM built from source (seed 000 step 3, seed 001 4.1 and TR2-TR6, seed 002 G2-G3) ---------------
def tracks_main(repo: Mapping) -> str | None:
    """Seed 001 4.1 phase 1: the unpinned source checkout is on main."""
    if not repo.get("work_tree"):
        return f"the source tree is not a git checkout (no branch to read): {repo}"
    if repo.get("branch") != "main":
        return f"the source checkout is on {repo.get('branch')!r}, not main (seed 001 4.1 phase 1), HEAD {repo.get('head')}"
    return None


SOURCE_STAGES = ["source", "env", "use_existing_torch", "build_deps", "editable"]   # seed 000 step 3, in order
DOC_BUILD_MAX_MIN = 45                           # seed 000 section 5: 15-45 min


def fallback_recorded(deviations: Sequence[str]) -> str | None:
    """Seed 003 3.2: a source build on a wheel-first profile says why the wheel was not kept."""
    if any("falling back to the source build" in d for d in deviations):
        return None
    return f"strategy source without a recorded reason: {list(deviations)}"


def clone_of_vllm(repo: Mapping, repo_url: str) -> str | None:
    """Seed 000 step 3.1/3.2: the source tree exists and is a clone of vLLM."""
    if not repo.get("exists"):
        return "no source tree"
    origin = repo.get("origin") or ""
    if "vllm-project/vllm" in origin or origin == repo_url:
        return None
    return f"the source tree's origin is {origin!r}, not vllm-project/vllm ({repo_url}): {repo}"


def checkout_at(repo: Mapping, commit: str) -> str | None:
    """Seed 000 step 3.2, seed 001 4.1 phase 2: HEAD is the configured commit, edited only by use_existing_torch.py."""
    if repo.get("head") != commit:
        return f"HEAD {repo.get('head')}, configured {commit}"
    others = [line for line in repo.get("status", []) if "requirements" not in line and "pyproject.toml" not in line]
    return f"the checkout has edits besides use_existing_torch.py's: {others}" if others else None


def sdist_at(pkg_info: str, venv_version: str, sdist: str | None, repo_dir: str) -> str | None:
    """Seed 001 4.1 phase 2 for a release sdist: its PKG-INFO and the venv's vLLM are the pinned version."""
    if not sdist or "==" not in sdist:
        return ("the profile pins no vLLM source (vllm.source.commit and vllm.source.sdist are empty: "
                "seed 001 phase 2 wants one)")
    want = sdist.split("==", 1)[1]
    m = re.search(r"^Version: (\S+)", pkg_info or "", re.M)
    if not m or m.group(1) != want:
        return f"{repo_dir}/PKG-INFO says {m.group(1) if m else 'nothing'}, pinned {sdist}"
    if (venv_version or "").split("+")[0] != want:
        return f"the venv's vllm is {venv_version!r}, pinned {sdist}"
    return None


def build_env(env: Mapping[str, str], want_arch: str, device: str, max_jobs: int | None) -> str | None:
    """Seed 000 step 3.3, seed 001 TR3, seed 002 G3: the build-time exports the log shows."""
    if env.get("TORCH_CUDA_ARCH_LIST") != (want_arch or ""):
        return f"TORCH_CUDA_ARCH_LIST={env.get('TORCH_CUDA_ARCH_LIST')!r}, want {want_arch!r}: {dict(env)}"
    if env.get("VLLM_FLASH_ATTN_VERSION") != FA_VERSION:
        return f"VLLM_FLASH_ATTN_VERSION={env.get('VLLM_FLASH_ATTN_VERSION')!r}, want {FA_VERSION}: {dict(env)}"
    if not env.get("MAX_JOBS") or env.get("MAX_JOBS") != env.get("CMAKE_BUILD_PARALLEL_LEVEL"):
        return f"MAX_JOBS and CMAKE_BUILD_PARALLEL_LEVEL are not set to the same value: {dict(env)}"
    if env.get("VLLM_TARGET_DEVICE") != device:
        return f"VLLM_TARGET_DEVICE={env.get('VLLM_TARGET_DEVICE')!r}, want {device!r}: {dict(env)}"
    if max_jobs and int(env["MAX_JOBS"]) > max_jobs:
        return f"MAX_JOBS={env['MAX_JOBS']} above the profile's cap {max_jobs}: {dict(env)}"
    return None


def max_jobs_fit(jobs: int, mem_gb: float, gb_per_job: float) -> str | None:
    """Seed 001 TR3: MAX_JOBS fits the memory (one job per gb_per_job GB, at least one)."""
    if 1 <= jobs <= max(1, mem_gb // gb_per_job):
        return None
    return f"MAX_JOBS={jobs} with {mem_gb:.1f} GB and {gb_per_job} GB per job"


def stages_in_one_shell(log: Mapping) -> str | None:
    """Seed 000 step 3 / seed 002 G2: clone, exports, use_existing_torch.py, build deps, editable install, in
    that order, all in one `bash -c`."""
    if list(log.get("order", [])) != SOURCE_STAGES:
        return f"the build stages ran as {log.get('order')}, want {SOURCE_STAGES}"
    if not log.get("single_shell"):
        return f"the stages did not all run inside one bash -c: {dict(log)}"
    return None


def no_torch_pins(pins: Sequence[str]) -> str | None:
    """Seed 000 step 3.4: use_existing_torch.py left no torch pin in the build requirements."""
    return f"torch pins left: {list(pins)}" if pins else None


def build_requirements(names: Sequence[str], installed: Mapping[str, str | None]) -> str | None:
    """Seed 000 step 3.5: every (non-torch) build requirement is installed in the venv."""
    missing = [n for n in names if not installed.get(n)]
    if names and not missing:
        return None
    return f"build requirements not installed: {missing} (of {list(names)})"


def editable_build(satisfied: bool, reason: str, location: str | None, repo_dir: str, exit_code: int | None) -> str | None:
    """Seed 000 step 3.6: vLLM is the editable install of the checkout, and the build command exited 0."""
    if not satisfied:
        return reason or "the source build is not satisfied"
    if location != repo_dir:
        return f"vllm's editable location is {location!r}, not {repo_dir}"
    if exit_code != 0:
        return f"the build command did not exit 0 (exit {exit_code})"
    return None


def build_minutes(seconds: float | None, max_min: float = DOC_BUILD_MAX_MIN) -> str | None:
    """Seed 000 section 5: the build takes 15-45 min (above the window fails; faster is fine)."""
    if seconds is None:
        return "no build_seconds in the build log"
    return f"source build took {seconds / 60:.1f} min, above the documents' {max_min} min" if seconds > max_min * 60 \
        else None


def artifacts_stay(exists: bool, build_dir: bool, repo_dir: str) -> str | None:
    """Seed 001 4.3: the checkout and its build outputs are not cleaned up."""
    if not exists:
        return f"{repo_dir} is gone after the build"
    return None if build_dir else f"no build directory left in {repo_dir} (seed 001 4.3: artifacts are not cleaned up)"


def torch_requirement_met(requires: Sequence[str], torch: str, torch_after_step: str | None) -> str | None:
    """Seed 002 G2: vLLM's own torch requirement accepts the venv's torch, and the torch step's torch is still there."""
    from packaging.requirements import Requirement

    bad = [q for q in requires if not Requirement(q.split(";")[0]).specifier.contains(torch.split("+")[0],
                                                                                      prereleases=True)]
    if bad:
        return f"vLLM requires {list(requires)} but the venv has torch {torch}"
    if torch_after_step != torch:
        return f"torch changed after the torch step: {torch_after_step} -> {torch}"
    return None


# ------------------------------------------------------------------ the performance sweep (specs/test_87_sweep.py)
def sweep_gaps(report: dict) -> str | None:
    """Cells (shape / variant) that did not start, and points with fewer runs than the workload's rounds."""
    want = report["workload"]["repeats"]
    bad = []
    for shape, s in report["shapes"].items():
        for name, v in s["variants"].items():
            if v.get("error"):
                bad.append(f"{shape}/{name}: {v['error']}")
                continue
            short = {c: p["output_throughput"].get("n", 0) for c, p in v["points"].items()
                     if p["output_throughput"].get("n", 0) < want}
            if short:
                bad.append(f"{shape}/{name}: runs per concurrency {short} of {want}")
    return "; ".join(bad) or None


def sweep_verdicts(comparisons: dict[str, dict], label: str) -> str | None:
    """None unless a point's verdict is failed: `comparisons` is {shape: {concurrency: threshold_verdict}}."""
    failed = [f"{shape} c={c}: median {v['gain_pct']:+.1f}% (best {v['best_pct']:+.1f}%) < {v['threshold_pct']}%"
              for shape, per in comparisons.items() for c, v in per.items() if v.get("verdict") == "failed"]
    return f"{label}: " + "; ".join(failed) if failed else None


def roofline_fractions(fractions: dict[str, float | None]) -> str | None:
    """Each concurrency-1 roofline fraction must be a measured share of the bandwidth floor, in (0, 1]."""
    bad = {k: f for k, f in fractions.items() if f is None or not 0 < f <= 1.0}
    return f"roofline fraction outside (0, 1]: {bad}" if bad else None


# ------------------------------------------------------------------ the docker target's GPU specs (specs/test_90_docker.py)
_LINK = re.compile(r"^GPU0\s+X\s+(NV\d+|PIX|PXB|PHB|NODE|SYS)\b", re.M)


def gpus_linked(topo: str) -> str | None:
    """`nvidia-smi topo -m`: GPU0's row names a link to a second GPU (NVLink NV#, or a PCIe path)."""
    return None if _LINK.search(topo) else f"nvidia-smi topo -m shows no second GPU linked to GPU0:\n{topo.strip()[:400]}"


def allocations_returned(allocated: list[int]) -> str | None:
    """torch.cuda.memory_allocated per GPU after the test tensor is freed: all zero."""
    if not allocated:
        return "no GPU reported its allocation"
    held = {i: b for i, b in enumerate(allocated) if b}
    return f"memory still allocated after free (bytes per GPU): {held}" if held else None


def kernel_sum(stdout: str, n: int = 256) -> str | None:
    """The nvcc vector add over i + 2i for i < n prints 3 * sum(range(n))."""
    lines = stdout.strip().splitlines()
    want = str(3 * sum(range(n)))
    got = lines[-1].strip() if lines else ""
    return None if got == want else f"the compiled kernel printed {got!r}, want {want}"


def gpu_memory_within(rows: list[tuple[int, int]], utilization: float, margin_mib: int) -> str | None:
    """nvidia-smi memory.used per GPU stays within gpu_memory_utilization x memory.total + a margin (MiB)."""
    over = [f"GPU{i}: {used} MiB used of {total} MiB (limit {utilization * total + margin_mib:.0f})"
            for i, (used, total) in enumerate(rows) if used > utilization * total + margin_mib]
    return "; ".join(over) or None
