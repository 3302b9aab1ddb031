# Generates e2e/src/proto/descriptors.txt from the prost code of the k8s-pb crate:
# one line per message ("M <openapi name>") followed by its fields
# ("F <tag> <snake_name> <kind> <label> <type>"), kind: string|int32|int64|bool|bytes|double|message|map
import os, re, sys
root = sys.argv[1]
groups = ["api/authorization/v1", "api/authentication/v1", "api/core/v1", "api/apps/v1", "api/batch/v1", "api/autoscaling/v1", "api/autoscaling/v2", "api/coordination/v1",
          "api/discovery/v1", "api/events/v1", "api/policy/v1", "api/networking/v1", "api/storage/v1", "api/scheduling/v1",
          "api/rbac/v1", "api/admissionregistration/v1", "apiextensions_apiserver/pkg/apis/apiextensions/v1",
          "apimachinery/pkg/apis/meta/v1", "apimachinery/pkg/util/intstr", "apimachinery/pkg/api/resource", "apimachinery/pkg/runtime"]
def openapi_name(modpath, typ):
    p = modpath.split("/")
    if p[0] == "api":
        return "io.k8s.api." + ".".join(p[1:]) + "." + typ
    if p[0] == "apiextensions_apiserver":
        return "io.k8s.apiextensions-apiserver." + ".".join(p[1:]) + "." + typ
    return "io.k8s." + ".".join(p) + "." + typ
def resolve(modpath, rust_type):
    t = rust_type.replace("::prost::alloc::boxed::Box<", "").rstrip(">")
    segs = [s for s in t.split("::") if s]
    cur = modpath.split("/")
    out = []
    for s in segs[:-1]:
        if s == "super":
            cur = cur[:-1]
        else:
            cur = cur + [s]
    return openapi_name("/".join(cur), segs[-1])
out = []
for g in groups:
    src = open(os.path.join(root, g, "mod.rs")).read()
    # an empty struct is written `pub struct X {}` on one line
    for m in re.finditer(r"pub struct (\w+) \{(?:\}|(.*?)\n\})", src, re.S):
        name, body = m.group(1), m.group(2) or ""
        out.append("M " + openapi_name(g, name))
        lines = [l.strip() for l in body.split("\n") if not l.strip().startswith("//")]
        flat = " ".join(lines).replace("< ", "<").replace(", >", ">").replace(" >", ">")
        for f in re.finditer(r"#\[prost\(([^\]]*)\)\]\s*pub (r#)?(\w+): (.*?),\s*(?=#\[prost|$)", flat + " "):
            attr, fname, ftype = f.group(1), f.group(3), f.group(4).strip()
            tag = re.search(r'tag = "(\d+)"', attr).group(1)
            label = "repeated" if "repeated" in attr else "single"
            if attr.startswith("btree_map"):
                kv = re.search(r'btree_map = "string, (\w+)"', attr).group(1)
                if kv == "message":
                    vt = re.search(r"BTreeMap<\s*::prost::alloc::string::String,\s*(.*)>$", ftype).group(1)
                    out.append(f"F {tag} {fname} map message {resolve(g, vt)}")
                else:
                    out.append(f"F {tag} {fname} map {kv} -")
                continue
            kind = attr.split(",")[0].split("=")[0].strip()
            typ = "-"
            if kind == "message":
                inner = re.search(r"(?:Option|Vec)<(.*)>$", ftype).group(1)
                typ = resolve(g, inner)
            out.append(f"F {tag} {fname} {kind} {label} {typ}")
open(sys.argv[2], "w").write("# generated from the k8s-pb 0.9.0 crate (Apache-2.0) by gen_proto.py; do not edit\n" + "\n".join(out) + "\n")
print(len(out))
