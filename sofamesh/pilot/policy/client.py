"""The policy commands of the ``sofamesh`` CLI (``apply``, ``get``, ``delete``, ``analyze``): Pilot's
REST API over HTTP, with rejections printed against the file, document and line they came from."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import httpx
import yaml

from sofamesh.pilot.policy.documents import parse_stream
from sofamesh.pilot.policy.kinds import Kind, by_api_version, by_name, known_kinds
from sofamesh.pilot.policy.resource import DEFAULT_NAMESPACE, Source
from sofamesh.pilot.policy.schema import Issue
from sofamesh.pilot.policy.validate import Verdict, validate

DEFAULT_PILOT = "http://127.0.0.1:15080"
_SUFFIXES = (".yaml", ".yml", ".json")


class CommandError(Exception):
    """A problem that stops the command (unreachable Pilot, unreadable file); exit status 1."""


def _read(target: str) -> Iterator[tuple[str, str]]:
    """(name, text) of ``-`` (stdin), a file, or each YAML/JSON file of a directory (sorted)."""
    if target == "-":
        yield "<stdin>", sys.stdin.read()
        return
    path = Path(target)
    files = sorted(p for p in path.iterdir() if p.suffix in _SUFFIXES) if path.is_dir() else [path]
    for p in files:
        try:
            yield str(p), p.read_text()
        except OSError as exc:
            raise CommandError(f"cannot read {p}: {exc.strerror}") from None


def documents(target: str) -> Iterator[tuple[Source, Any, str | None]]:
    """(source, body, syntax problem) of every document under ``target``."""
    for name, text in _read(target):
        for d in parse_stream(text):
            yield Source(name, d.document, d.line, d.lines), d.body, d.problem


class PilotClient:
    def __init__(self, base: str = DEFAULT_PILOT, timeout: float = 10.0) -> None:
        self.base = base.rstrip("/")
        self._http = httpx.Client(base_url=self.base, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise CommandError(f"cannot reach Pilot at {self.base}: {exc}") from None

    @staticmethod
    def path(kind: Kind, namespace: str | None, name: str | None = None, version: str | None = None) -> str:
        base = kind.api_path(version)
        p = f"{base}/namespaces/{namespace}/{kind.plural}" if namespace is not None else f"{base}/{kind.plural}"
        return f"{p}/{name}" if name else p


def _target(body: Any) -> tuple[Kind, str, str, str] | None:
    """(kind, version, namespace, name) of a document good enough to address, else ``None``."""
    if not isinstance(body, dict) or not isinstance(body.get("metadata"), dict):
        return None
    api, kind_name, meta = body.get("apiVersion"), body.get("kind"), body["metadata"]
    if not isinstance(api, str) or not isinstance(kind_name, str) or not isinstance(meta.get("name"), str):
        return None
    kind = by_api_version(api, kind_name)
    if kind is None or not meta["name"]:
        return None
    ns = meta.get("namespace") if isinstance(meta.get("namespace"), str) and meta.get("namespace") else None
    return kind, api.rpartition("/")[2], ns or DEFAULT_NAMESPACE, meta["name"]


def _rejection(source: Source, ref: str, issues: list[Issue]) -> Verdict:
    return Verdict(source, ref, None, tuple(issues))


def _server_issues(resp: httpx.Response) -> list[Issue]:
    try:
        doc = resp.json()
    except ValueError:
        return [Issue("", f"HTTP {resp.status_code}: {resp.text.strip()}")]
    items = doc.get("issues")
    if items:
        return [Issue(i.get("path", ""), i.get("message", ""), i.get("severity") == "warning") for i in items]
    return [Issue("", str(doc.get("message") or doc.get("error") or resp.text))]


def apply(client: PilotClient, target: str, namespace: str | None, out: TextIO, err: TextIO,
          dry_run: bool = False) -> int:
    """``sofamesh apply -f``: every document in turn; 0 when each was accepted, 1 otherwise."""
    failed = 0
    for source, body, problem in documents(target):
        if problem is not None:
            failed += 1
            print(f"error: {source.describe()}: {problem}", file=err)
            continue
        addr = _target(body)
        if addr is None:  # cannot address it: let the validator say what is missing
            verdict = validate(body, source, namespace)
            failed += 1
            for line in verdict.lines():
                print(f"error: {line}", file=err)
            continue
        kind, version, ns, name = addr
        if namespace is not None and body["metadata"].get("namespace") is None:
            ns = namespace
        resp = client.request("PUT", client.path(kind, ns, name, version), json=body,
                              params={"dryRun": "All"} if dry_run else None,
                              headers={"X-Sofamesh-Source": source.origin})
        ref = f"{kind.kind} {ns}/{name}"
        if resp.status_code in (200, 201):
            result = resp.headers.get("X-Sofamesh-Result", "configured")
            print(f"{kind.qualified}/{name} {result}{' (dry run)' if dry_run else ''}", file=out)
            for line in _rejection(source, ref, [i for i in _server_issues_of(resp) if i.warning]).lines():
                print(f"warning: {line}", file=err)
            continue
        failed += 1
        for line in _rejection(source, ref, _server_issues(resp)).lines():
            print(f"error: {line}", file=err)
    return 1 if failed else 0


def _server_issues_of(resp: httpx.Response) -> list[Issue]:
    warnings = resp.json().get("warnings") or []
    return [Issue(w.get("path", ""), w.get("message", ""), True) for w in warnings]


def _resolve_kind(word: str) -> Kind:
    kind = by_name(word)
    if kind is None:
        raise CommandError(f"unknown resource type {word!r} (known: {known_kinds()}; short names: "
                           "vs, dr, se, gw, we, ap, pa, ra, mr)")
    return kind


def _summary(obj: dict[str, Any]) -> str:
    spec = obj.get("spec") or {}
    if "hosts" in spec:
        return ",".join(spec["hosts"])
    return str(spec.get("host", ""))


def get(client: PilotClient, word: str, name: str | None, namespace: str | None, all_namespaces: bool,
        output: str | None, out: TextIO) -> int:
    kind = _resolve_kind(word)
    ns = None if all_namespaces and not name else (namespace or DEFAULT_NAMESPACE)
    resp = client.request("GET", client.path(kind, ns, name))
    if resp.status_code != 200:
        raise CommandError(str(resp.json().get("message", resp.text)))
    doc = resp.json()
    items = [doc] if name else doc.get("items", [])
    if output == "json":
        print(json.dumps(doc, indent=2, sort_keys=True), file=out)
    elif output == "yaml":
        print(yaml.safe_dump_all(items, sort_keys=False).rstrip() if items else "", file=out)
    else:
        if not items:
            print(f"No resources found{'' if ns is None else f' in {ns} namespace'}.", file=out)
            return 0
        rows = [("NAMESPACE", "NAME", "HOSTS")] + [
            (i["metadata"]["namespace"], i["metadata"]["name"], _summary(i)) for i in items]
        widths = [max(len(r[c]) for r in rows) for c in range(3)]
        for r in rows:
            print("   ".join(v.ljust(widths[c]) for c, v in enumerate(r)).rstrip(), file=out)
    return 0


def delete(client: PilotClient, target: str | None, word: str | None, name: str | None, namespace: str | None,
           out: TextIO, err: TextIO) -> int:
    """``sofamesh delete -f FILE`` or ``sofamesh delete KIND NAME``; 1 when anything was not deleted."""
    targets: list[tuple[Kind, str, str]] = []
    if target is not None:
        for source, body, problem in documents(target):
            addr = _target(body) if problem is None else None
            if addr is None:
                print(f"error: {source.describe()}: cannot tell which resource this document names", file=err)
                return 1
            kind, _, ns, n = addr
            targets.append((kind, namespace if namespace and not body["metadata"].get("namespace") else ns, n))
    elif word and name:
        targets.append((_resolve_kind(word), namespace or DEFAULT_NAMESPACE, name))
    else:
        raise CommandError("give -f FILE, or KIND NAME")
    failed = 0
    for kind, ns, n in targets:
        resp = client.request("DELETE", client.path(kind, ns, n))
        if resp.status_code == 200:
            print(f'{kind.qualified} "{n}" deleted', file=out)
        else:
            failed += 1
            print(f"error: {_server_issues(resp)[0].message}", file=err)
    return 1 if failed else 0


def analyze(client: PilotClient, out: TextIO) -> int:
    """Print every finding; 1 when any is an Error, else 0."""
    resp = client.request("GET", "/debug/policy/analyze")
    if resp.status_code != 200:
        raise CommandError(f"HTTP {resp.status_code}: {resp.text.strip()}")
    findings = resp.json().get("findings", [])
    for f in findings:
        print(f"{f['level']} [{f['code']}] ({f['resource']}) {f['message']}", file=out)
    if not findings:
        print("\u2714 No validation issues found when analyzing the mesh.", file=out)
    return 1 if any(f["level"] == "Error" for f in findings) else 0


__all__ = ["DEFAULT_PILOT", "CommandError", "PilotClient", "analyze", "apply", "delete", "documents", "get"]
