#!/usr/bin/env python3
"""Generates apiserver/src/protobuf/table.rs: the protobuf descriptors of every message
reachable from the kinds Berth serves, so protobuf request bodies can be decoded to JSON.

Inputs are git directories of kubernetes/api and kubernetes/apimachinery (read with
`git show <ref>:<path>`, so no work tree is needed). Field numbers, names and types come from
their generated.proto files; whether a scalar's zero value is dropped from JSON (a non-pointer
Go field tagged omitempty) comes from the Go struct tags beside them.

Usage:
  scripts/gen-proto-table.py --api DIR --apimachinery DIR [--ref release-1.33] \
      > apiserver/src/protobuf/table.rs
"""

import argparse
import re
import subprocess
import sys

META = "k8s.io.apimachinery.pkg.apis.meta.v1"

# apiVersion, kind, proto message: what a request body's Unknown envelope may name.
ROOTS = [
    ("v1", "Namespace", "k8s.io.api.core.v1.Namespace"),
    ("v1", "Pod", "k8s.io.api.core.v1.Pod"),
    ("v1", "Node", "k8s.io.api.core.v1.Node"),
    ("v1", "Service", "k8s.io.api.core.v1.Service"),
    ("v1", "Endpoints", "k8s.io.api.core.v1.Endpoints"),
    ("v1", "ConfigMap", "k8s.io.api.core.v1.ConfigMap"),
    ("v1", "Secret", "k8s.io.api.core.v1.Secret"),
    ("v1", "ServiceAccount", "k8s.io.api.core.v1.ServiceAccount"),
    ("v1", "Event", "k8s.io.api.core.v1.Event"),
    ("v1", "PersistentVolumeClaim", "k8s.io.api.core.v1.PersistentVolumeClaim"),
    ("v1", "PersistentVolume", "k8s.io.api.core.v1.PersistentVolume"),
    ("v1", "Binding", "k8s.io.api.core.v1.Binding"),
    ("apps/v1", "Deployment", "k8s.io.api.apps.v1.Deployment"),
    ("apps/v1", "ReplicaSet", "k8s.io.api.apps.v1.ReplicaSet"),
    ("apps/v1", "DaemonSet", "k8s.io.api.apps.v1.DaemonSet"),
    ("apps/v1", "StatefulSet", "k8s.io.api.apps.v1.StatefulSet"),
    ("batch/v1", "Job", "k8s.io.api.batch.v1.Job"),
    ("certificates.k8s.io/v1", "CertificateSigningRequest",
     "k8s.io.api.certificates.v1.CertificateSigningRequest"),
    ("coordination.k8s.io/v1", "Lease", "k8s.io.api.coordination.v1.Lease"),
    ("discovery.k8s.io/v1", "EndpointSlice", "k8s.io.api.discovery.v1.EndpointSlice"),
    ("autoscaling/v1", "Scale", "k8s.io.api.autoscaling.v1.Scale"),
    ("meta.k8s.io/v1", "DeleteOptions", META + ".DeleteOptions"),
]

# Messages with a JSON form of their own: the decoder handles them by name, not by fields.
SPECIAL = {
    META + ".Time": "Time",
    META + ".MicroTime": "MicroTime",
    META + ".Duration": "Duration",
    META + ".FieldsV1": "FieldsV1",
    "k8s.io.apimachinery.pkg.api.resource.Quantity": "Quantity",
    "k8s.io.apimachinery.pkg.util.intstr.IntOrString": "IntOrString",
    "k8s.io.apimachinery.pkg.runtime.RawExtension": "RawExtension",
}

SCALARS = {
    "string": "Str",
    "bytes": "Bytes",
    "bool": "Bool",
    "int32": "I32",
    "int64": "I64",
    "uint32": "U32",
    "uint64": "U64",
    "double": "F64",
    "float": "F32",
}

FIELD_RE = re.compile(r"^\s*(optional|repeated|required)\s+(\S+)\s+(\w+)\s*=\s*(\d+)")
MAP_RE = re.compile(r"^\s*map<\s*(\S+?)\s*,\s*(\S+?)\s*>\s+(\w+)\s*=\s*(\d+)")
GO_FIELD_RE = re.compile(r'^\s*(?:\w+\s+)?(\S+)\s+`[^`]*json:"([^"]*)"[^`]*protobuf:"([^"]*)"')


class Repos:
    def __init__(self, api, apimachinery, ref):
        self.roots = {"k8s.io/api/": api, "k8s.io/apimachinery/": apimachinery}
        self.ref = ref

    def _split(self, path):
        for prefix, repo in self.roots.items():
            if path.startswith(prefix):
                return repo, path[len(prefix):]
        raise SystemExit(f"no repository for {path}")

    def show(self, path):
        repo, rel = self._split(path)
        return subprocess.run(["git", "--git-dir", repo, "show", f"{self.ref}:{rel}"],
                              check=True, capture_output=True, text=True).stdout

    def ls(self, directory):
        repo, rel = self._split(directory)
        out = subprocess.run(["git", "--git-dir", repo, "ls-tree", "--name-only",
                              f"{self.ref}:{rel}"], check=True, capture_output=True,
                             text=True).stdout
        return out.split()


def parse_proto(text):
    """Returns (package, imports, {message: [(number, name, label, type, map_value)]})."""
    package, imports, messages = None, [], {}
    current = None
    for line in text.splitlines():
        line = line.split("//", 1)[0].rstrip()
        if not line.strip():
            continue
        if m := re.match(r"^package\s+([\w.]+);", line):
            package = m.group(1)
        elif m := re.match(r'^import\s+"([^"]+)";', line):
            imports.append(m.group(1))
        elif m := re.match(r"^message\s+(\w+)\s*\{", line):
            current = messages.setdefault(m.group(1), [])
        elif re.match(r"^\s*(enum|oneof)\b", line):
            raise SystemExit(f"unsupported proto construct: {line.strip()}")
        elif line.startswith("}"):
            current = None
        elif current is not None and (m := MAP_RE.match(line)):
            key, value, name, number = m.groups()
            current.append((int(number), name, "map", key, value))
        elif current is not None and (m := FIELD_RE.match(line)):
            label, ty, name, number = m.groups()
            current.append((int(number), name, label, ty, None))
    return package, imports, messages


def go_tags(repos, directory):
    """({(struct, number)} of non-pointer Go fields tagged omitempty, {(struct, number)} of
    embedded fields, whose JSON is inlined into the parent object)."""
    out, inline = set(), set()
    for name in repos.ls(directory):
        if not name.endswith(".go") or name.endswith("_test.go") or name.startswith(
                ("generated", "zz_generated")):
            continue
        struct = None
        for line in repos.show(f"{directory}/{name}").splitlines():
            if m := re.match(r"^type\s+(\w+)\s+struct\s*\{", line):
                struct = m.group(1)
            elif line.startswith("}"):
                struct = None
            elif struct and (m := GO_FIELD_RE.match(line)):
                go_type, json_tag, pb_tag = m.groups()
                number = int(pb_tag.split(",")[1])
                if json_tag.split(",")[0] == "":
                    inline.add((struct, number))
                if "omitempty" in json_tag.split(",")[1:] and not go_type.startswith("*"):
                    out.add((struct, number))
    return out, inline


def load(repos, start_dirs):
    """Every message of the start packages and their imports, keyed by full name."""
    messages, omit, inline, seen = {}, {}, {}, set()
    queue = list(start_dirs)
    while queue:
        directory = queue.pop()
        if directory in seen:
            continue
        seen.add(directory)
        package, imports, msgs = parse_proto(repos.show(f"{directory}/generated.proto"))
        zero, embedded = go_tags(repos, directory)
        for name, fields in msgs.items():
            full = f"{package}.{name}"
            messages[full] = (package, fields)
            omit[full] = {n for (s, n) in zero if s == name}
            inline[full] = {n for (s, n) in embedded if s == name}
        queue.extend(i.rsplit("/", 1)[0] for i in imports)
    return messages, omit, inline


def resolve(package, ty):
    if ty in SCALARS:
        return ty
    if ty.startswith("."):
        return ty[1:]
    if "." in ty:
        return ty
    return f"{package}.{ty}"


def reachable(messages):
    order, seen = [], set()
    stack = [full for (_, _, full) in ROOTS]
    while stack:
        full = stack.pop()
        if full in seen or full in SPECIAL:
            continue
        if full not in messages:
            raise SystemExit(f"message {full} not found")
        seen.add(full)
        order.append(full)
        package, fields = messages[full]
        for (_, _, label, ty, value) in fields:
            for t in (ty, value) if label == "map" else (ty,):
                if t is not None:
                    r = resolve(package, t)
                    if r not in SCALARS:
                        stack.append(r)
    return sorted(order)


def rust_type(package, ty, index):
    r = resolve(package, ty)
    if r in SCALARS:
        return SCALARS[r]
    if r in SPECIAL:
        return SPECIAL[r]
    return f"Msg({index[r]})"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--api", required=True)
    ap.add_argument("--apimachinery", required=True)
    ap.add_argument("--ref", default="release-1.33")
    args = ap.parse_args()
    repos = Repos(args.api, args.apimachinery, args.ref)
    start = sorted({"k8s.io/" + ("api/" + f.split(".")[3] + "/" + f.split(".")[4]
                                 if f.startswith("k8s.io.api.") else
                                 "apimachinery/pkg/apis/meta/v1")
                    for (_, _, f) in ROOTS})
    messages, omit, inline = load(repos, start)
    names = reachable(messages)
    index = {n: i for i, n in enumerate(names)}
    w = sys.stdout.write
    w("// @generated by scripts/gen-proto-table.py from the generated.proto files of\n")
    w(f"// kubernetes/api and kubernetes/apimachinery at {args.ref}. Do not edit.\n\n")
    w("use super::schema::{Card::*, Field as F, Message as M, Root, Ty::*};\n\n")
    w("/// Every message reachable from a root, sorted by full name.\n")
    w("pub(super) static MESSAGES: &[M] = &[\n")
    for full in names:
        package, fields = messages[full]
        w(f'    M("{full}", &[\n')
        for (number, name, label, ty, value) in sorted(fields):
            if label == "map":
                if ty != "string":
                    raise SystemExit(f"{full}.{name}: map key {ty} is not string")
                card, t = "Map", rust_type(package, value, index)
            elif label == "repeated":
                card, t = "Rep", rust_type(package, ty, index)
            elif number in inline[full]:
                card, t = "Inline", rust_type(package, ty, index)
            else:
                t = rust_type(package, ty, index)
                card = "OmitZero" if number in omit[full] and resolve(
                    package, ty) in SCALARS else "Opt"
            w(f'        F({number}, "{name}", {t}, {card}),\n')
        w("    ]),\n")
    w("];\n\n")
    w("/// The messages a request body may carry, by the apiVersion and kind of its envelope.\n")
    w("pub(super) static ROOTS: &[Root] = &[\n")
    for (api_version, kind, full) in ROOTS:
        w(f'    Root("{api_version}", "{kind}", {index[full]}),\n')
    w("];\n")


if __name__ == "__main__":
    main()
