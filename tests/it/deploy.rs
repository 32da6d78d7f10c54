//! `deploy/`: the Kubernetes manifests and the nginx site line up with the `sidegate.toml` they
//! carry (listener ports, probes, secret files and the Secret keys behind them, the security
//! context, the ingress-nginx `auth-url`), and every one of those configs loads with sidegate's
//! own loader. Each problem names the file, the object and the field.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml_ng::Value;

use crate::support::{repo, Keys};

/// `[headers]` key and default name of the identity headers a proxy must pass on.
const IDENTITY_HEADERS: [(&str, &str); 5] = [
    ("user", "X-Sidegate-User"),
    ("email", "X-Sidegate-Email"),
    ("role", "X-Sidegate-Role"),
    ("teams", "X-Sidegate-Teams"),
    ("assertion", "X-Sidegate-Assertion"),
];

/// `*_file` keys that hold public material: they must be mounted, but not from a Secret.
const PUBLIC_FILE_KEYS: [&str; 4] = [
    "idp_metadata_file",
    "idp_metadata_signing_cert_file",
    "sp_cert_file",
    "cert_file",
];

const PLACEHOLDER_LABEL: &str = "sidegate/placeholder";

// === manifests ===

/// One YAML document of a manifest file.
#[derive(Clone)]
struct Doc {
    /// Path relative to the repository.
    file: String,
    value: Value,
}

impl Doc {
    fn str(&self, path: &[&str]) -> Option<&str> {
        at(&self.value, path).and_then(Value::as_str)
    }
    fn kind(&self) -> &str {
        self.str(&["kind"]).unwrap_or("")
    }
    fn name(&self) -> &str {
        self.str(&["metadata", "name"]).unwrap_or("")
    }
    fn namespace(&self) -> &str {
        self.str(&["metadata", "namespace"]).unwrap_or("")
    }
    /// `file Kind namespace/name`, for messages.
    fn id(&self) -> String {
        format!(
            "{} {} {}",
            self.file,
            self.kind(),
            qualified(self.namespace(), self.name())
        )
    }
}

fn qualified(namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        name.to_string()
    } else {
        format!("{namespace}/{name}")
    }
}

fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut v = v;
    for k in path {
        v = v.get(*k)?;
    }
    Some(v)
}

fn at_opt<'a>(v: Option<&'a Value>, path: &[&str]) -> Option<&'a Value> {
    v.and_then(|v| at(v, path))
}

fn seq<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    at(v, path)
        .and_then(Value::as_sequence)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// A mapping of strings (labels, selectors, annotations, ConfigMap data).
fn string_map(v: &Value, path: &[&str]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(m) = at(v, path).and_then(Value::as_mapping) {
        for (k, v) in m {
            if let (Some(k), Some(v)) = (k.as_str(), v.as_str()) {
                out.insert(k.to_string(), v.to_string());
            }
        }
    }
    out
}

fn keys_of(v: &Value, path: &[&str]) -> BTreeSet<String> {
    at(v, path)
        .and_then(Value::as_mapping)
        .map(|m| {
            m.keys()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

fn named<'a>(items: &'a [Value], name: &str) -> Option<&'a Value> {
    items
        .iter()
        .find(|i| i.get("name").and_then(Value::as_str) == Some(name))
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn parse_docs(file: &str, text: &str) -> Vec<Doc> {
    let mut docs = Vec::new();
    for (i, de) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(de)
            .unwrap_or_else(|e| panic!("{file}: document {} is not valid YAML: {e}", i + 1));
        if !value.is_null() {
            docs.push(Doc {
                file: file.to_string(),
                value,
            });
        }
    }
    docs
}

fn kube_dir() -> PathBuf {
    repo().join("deploy/kubernetes")
}

/// Every document of every `*.yaml` under deploy/kubernetes.
fn manifests() -> Vec<Doc> {
    let files = yaml_files(&kube_dir());
    assert!(!files.is_empty(), "no *.yaml under deploy/kubernetes");
    let mut docs = Vec::new();
    for path in files {
        let file = path.strip_prefix(repo()).unwrap().display().to_string();
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
        docs.extend(parse_docs(&file, &text));
    }
    docs
}

fn readme() -> String {
    std::fs::read_to_string(repo().join("deploy/README.md")).expect("deploy/README.md")
}

fn objects<'a>(docs: &'a [Doc], kind: &'a str) -> impl Iterator<Item = &'a Doc> + 'a {
    docs.iter().filter(move |d| d.kind() == kind)
}

fn find<'a>(docs: &'a [Doc], kind: &str, namespace: &str, name: &str) -> Option<&'a Doc> {
    docs.iter()
        .find(|d| d.kind() == kind && d.namespace() == namespace && d.name() == name)
}

/// Every problem found, reported together.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn check(&mut self, ok: bool, message: impl FnOnce() -> String) {
        if !ok {
            self.0.push(message());
        }
    }
    fn add(&mut self, message: String) {
        self.0.push(message);
    }
    fn assert_none(self, what: &str) {
        assert!(
            self.0.is_empty(),
            "{what}: {} problem(s):\n  - {}",
            self.0.len(),
            self.0.join("\n  - ")
        );
    }
}

// === sidegate's config inside a pod ===

fn toml_str<'a>(t: &'a toml::Table, section: &str, key: &str) -> Option<&'a str> {
    t.get(section)?.as_table()?.get(key)?.as_str()
}

fn toml_strs(t: &toml::Table, section: &str, key: &str) -> Vec<String> {
    t.get(section)
        .and_then(|s| s.as_table())
        .and_then(|s| s.get(key))
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn prefix(t: &toml::Table) -> String {
    toml_str(t, "server", "prefix")
        .unwrap_or("/.sidegate")
        .to_string()
}

fn public_host(t: &toml::Table) -> Option<String> {
    let u = url::Url::parse(toml_str(t, "server", "public_url")?).ok()?;
    u.host_str().map(str::to_ascii_lowercase)
}

/// The identity header names this config emits.
fn header_names(t: &toml::Table) -> Vec<String> {
    IDENTITY_HEADERS
        .iter()
        .map(|&(key, default)| toml_str(t, "headers", key).unwrap_or(default).to_string())
        .collect()
}

/// Every `*_file` key (dotted) and its value.
fn file_keys(t: &toml::Table, at: &str, out: &mut Vec<(String, String)>) {
    for (k, v) in t {
        let key = if at.is_empty() {
            k.clone()
        } else {
            format!("{at}.{k}")
        };
        match v {
            toml::Value::Table(inner) => file_keys(inner, &key, out),
            toml::Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let toml::Value::Table(inner) = item {
                        file_keys(inner, &format!("{key}[{i}]"), out);
                    }
                }
            }
            toml::Value::String(s) if k.ends_with("_file") => out.push((key, s.clone())),
            _ => {}
        }
    }
}

fn rewrite_files(t: &mut toml::Table, f: &mut dyn FnMut(&str) -> String) {
    for (k, v) in t.iter_mut() {
        match v {
            toml::Value::Table(inner) => rewrite_files(inner, f),
            toml::Value::Array(items) => {
                for item in items.iter_mut() {
                    if let toml::Value::Table(inner) = item {
                        rewrite_files(inner, f);
                    }
                }
            }
            toml::Value::String(s) if k.ends_with("_file") => {
                let local = f(s.as_str());
                *s = local;
            }
            _ => {}
        }
    }
}

/// Loads `text` with `sidegate::config::load`, its `*_file` paths pointed at valid secrets in a
/// temp dir (the files `sidegate keys generate` writes, plus the client secret).
fn load_with_test_secrets(text: &str) -> Result<(), String> {
    let keys = Keys::new();
    let mut table: toml::Table = toml::from_str(text).map_err(|e| format!("not TOML: {e}"))?;
    rewrite_files(&mut table, &mut |path| {
        let name = Path::new(path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "unnamed".into());
        let local = keys.path().join(name);
        if !local.exists() {
            std::fs::write(&local, "test-secret\n").unwrap();
        }
        local.display().to_string()
    });
    let text = toml::to_string(&table).map_err(|e| format!("cannot write TOML back: {e}"))?;
    sidegate::config::load(&text, &sidegate::config::Env::new(), keys.path())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// A Deployment's sidegate container and the config it is started with.
struct Sidegate {
    /// The Deployment, for messages.
    id: String,
    namespace: String,
    pod_labels: BTreeMap<String, String>,
    pod: Value,
    container: Value,
    /// Directory of the config file inside the container.
    config_dir: String,
    /// `ConfigMap ns/name key k`, for messages.
    config_source: String,
    toml_text: String,
    toml: toml::Table,
}

impl Sidegate {
    fn ports(&self) -> Vec<(String, u64)> {
        container_ports(&self.container)
    }
    fn listen(&self) -> Vec<SocketAddr> {
        toml_strs(&self.toml, "server", "listen")
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect()
    }
    fn admin(&self) -> Option<SocketAddr> {
        toml_str(&self.toml, "server", "admin_listen").and_then(|a| a.parse().ok())
    }
}

fn container_ports(c: &Value) -> Vec<(String, u64)> {
    seq(c, &["ports"])
        .iter()
        .filter_map(|p| {
            let name = p.get("name").and_then(Value::as_str).unwrap_or("");
            Some((name.to_string(), p.get("containerPort")?.as_u64()?))
        })
        .collect()
}

fn pod_containers(pod: &Value) -> Vec<&Value> {
    seq(pod, &["containers"])
        .iter()
        .chain(seq(pod, &["initContainers"]))
        .collect()
}

/// The value after `--config`/`-c` (or `--config=`) in a container's command line.
fn config_arg(container: &Value) -> Option<String> {
    let words: Vec<&str> = seq(container, &["command"])
        .iter()
        .chain(seq(container, &["args"]))
        .filter_map(Value::as_str)
        .collect();
    for (i, w) in words.iter().enumerate() {
        if let Some(v) = w.strip_prefix("--config=") {
            return Some(v.to_string());
        }
        if *w == "--config" || *w == "-c" {
            return words.get(i + 1).map(|s| s.to_string());
        }
    }
    None
}

/// The volume mount that holds `path`: the deepest directory mount above it, or a `subPath`
/// mount of exactly that file. Returns the mount and the path inside the volume.
fn mount_for<'a>(container: &'a Value, path: &str) -> Option<(&'a Value, String)> {
    let mut best: Option<(&Value, String, usize)> = None;
    for m in seq(container, &["volumeMounts"]) {
        let Some(mount_path) = m.get("mountPath").and_then(Value::as_str) else {
            continue;
        };
        let mount_path = mount_path.trim_end_matches('/');
        let inside = match m.get("subPath").and_then(Value::as_str) {
            Some(sub) if path == mount_path => sub.to_string(),
            Some(_) => continue,
            None => match path.strip_prefix(&format!("{mount_path}/")) {
                Some(rest) => rest.to_string(),
                None => continue,
            },
        };
        if best
            .as_ref()
            .is_none_or(|(_, _, len)| mount_path.len() > *len)
        {
            best = Some((m, inside, mount_path.len()));
        }
    }
    best.map(|(m, inside, _)| (m, inside))
}

/// The key of a ConfigMap or Secret volume that shows up as `inside` in the mount.
fn volume_key(source: &Value, inside: &str) -> Option<String> {
    let items = seq(source, &["items"]);
    if items.is_empty() {
        return Some(inside.to_string());
    }
    items
        .iter()
        .find(|i| i.get("path").and_then(Value::as_str) == Some(inside))
        .and_then(|i| i.get("key").and_then(Value::as_str))
        .map(String::from)
}

/// Every Deployment with a container named (or imaged) sidegate, with its config.
fn sidegates(docs: &[Doc], p: &mut Problems) -> Vec<Sidegate> {
    let mut out = Vec::new();
    for d in objects(docs, "Deployment") {
        let id = d.id();
        let Some(pod) = at(&d.value, &["spec", "template", "spec"]) else {
            p.add(format!("{id}: spec.template.spec missing"));
            continue;
        };
        let containers = seq(pod, &["containers"]);
        let container = named(containers, "sidegate").or_else(|| {
            containers.iter().find(|c| {
                c.get("image")
                    .and_then(Value::as_str)
                    .is_some_and(|i| i.contains("sidegate"))
            })
        });
        let Some(container) = container else { continue };
        let Some(config) = config_arg(container) else {
            p.add(format!(
                "{id}: container sidegate: args: no --config PATH, so the ConfigMap cannot be found"
            ));
            continue;
        };
        let config_dir = Path::new(&config)
            .parent()
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        let Some((mount, inside)) = mount_for(container, &config) else {
            p.add(format!(
                "{id}: container sidegate: volumeMounts: nothing is mounted at {config} (the --config path)"
            ));
            continue;
        };
        let volume_name = mount.get("name").and_then(Value::as_str).unwrap_or("");
        let volume = named(seq(pod, &["volumes"]), volume_name);
        let Some(cm_source) = at_opt(volume, &["configMap"]) else {
            p.add(format!(
                "{id}: volumes: {volume_name} (mounted for {config}) is not a configMap volume"
            ));
            continue;
        };
        let cm_name = cm_source.get("name").and_then(Value::as_str).unwrap_or("");
        let Some(key) = volume_key(cm_source, &inside) else {
            p.add(format!(
                "{id}: volumes: {volume_name}: items map no key to {inside}"
            ));
            continue;
        };
        let Some(cm) = find(docs, "ConfigMap", d.namespace(), cm_name) else {
            p.add(format!(
                "{id}: volumes: {volume_name}: ConfigMap {} is not in deploy/kubernetes",
                qualified(d.namespace(), cm_name)
            ));
            continue;
        };
        let Some(text) = cm.str(&["data", key.as_str()]) else {
            p.add(format!(
                "{}: data: no key {key} (the --config file {config})",
                cm.id()
            ));
            continue;
        };
        let toml = match toml::from_str::<toml::Table>(text) {
            Ok(t) => t,
            Err(e) => {
                p.add(format!("{}: data.{key}: not TOML: {e}", cm.id()));
                continue;
            }
        };
        out.push(Sidegate {
            id,
            namespace: d.namespace().to_string(),
            pod_labels: string_map(&d.value, &["spec", "template", "metadata", "labels"]),
            pod: pod.clone(),
            container: container.clone(),
            config_dir,
            config_source: format!("{} key {key}", cm.id()),
            toml_text: text.to_string(),
            toml,
        });
    }
    out
}

// === where Secret keys are defined ===

/// One definition of a Secret's keys: an object in the manifests, a kustomize
/// secretGenerator, or a `kubectl create secret generic` command in deploy/README.md.
struct SecretSource {
    origin: String,
    documented: bool,
    namespace: String,
    name: String,
    keys: BTreeSet<String>,
}

fn file_spec_key(spec: &str) -> String {
    match spec.split_once('=') {
        Some((k, _)) => k.to_string(),
        None => Path::new(spec)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    }
}

fn readme_secrets(text: &str) -> Vec<SecretSource> {
    const CMD: &str = "kubectl create secret generic ";
    let mut commands = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let l = line.trim();
        if let Some(rest) = l.strip_suffix('\\') {
            cur.push_str(rest);
            cur.push(' ');
            continue;
        }
        cur.push_str(l);
        commands.push(std::mem::take(&mut cur));
    }
    let mut out = Vec::new();
    for c in commands {
        let Some(i) = c.find(CMD) else { continue };
        let words: Vec<&str> = c[i + CMD.len()..].split_whitespace().collect();
        let Some(name) = words.first() else { continue };
        let mut s = SecretSource {
            origin: format!("deploy/README.md `kubectl create secret generic {name}`"),
            documented: true,
            namespace: String::new(),
            name: name.to_string(),
            keys: BTreeSet::new(),
        };
        let mut w = words[1..].iter();
        while let Some(word) = w.next() {
            match *word {
                "|" | ";" | "&&" => break,
                "-n" | "--namespace" => s.namespace = w.next().unwrap_or(&"").to_string(),
                "--from-file" | "--from-literal" => {
                    if let Some(spec) = w.next() {
                        s.keys.insert(file_spec_key(spec));
                    }
                }
                _ => {
                    if let Some(ns) = word.strip_prefix("--namespace=") {
                        s.namespace = ns.to_string();
                    } else if let Some(spec) = word
                        .strip_prefix("--from-file=")
                        .or_else(|| word.strip_prefix("--from-literal="))
                    {
                        s.keys.insert(file_spec_key(spec));
                    }
                }
            }
        }
        out.push(s);
    }
    out
}

fn secret_sources(docs: &[Doc], readme: &str) -> Vec<SecretSource> {
    let mut out = readme_secrets(readme);
    for s in objects(docs, "Secret") {
        let mut keys = keys_of(&s.value, &["data"]);
        keys.extend(keys_of(&s.value, &["stringData"]));
        out.push(SecretSource {
            origin: s.id(),
            documented: false,
            namespace: s.namespace().to_string(),
            name: s.name().to_string(),
            keys,
        });
    }
    for k in objects(docs, "Kustomization") {
        for g in seq(&k.value, &["secretGenerator"]) {
            let name = g.get("name").and_then(Value::as_str).unwrap_or("");
            let keys = seq(g, &["files"])
                .iter()
                .chain(seq(g, &["literals"]))
                .filter_map(Value::as_str)
                .map(file_spec_key)
                .collect();
            out.push(SecretSource {
                origin: format!("{} secretGenerator {name}", k.file),
                documented: true,
                namespace: g
                    .get("namespace")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                name: name.to_string(),
                keys,
            });
        }
    }
    out
}

// === the checks, as functions so that a broken copy can be fed to them ===

fn check_objects(docs: &[Doc]) -> Problems {
    let mut p = Problems::default();
    let mut seen = BTreeSet::new();
    for d in docs {
        if d.kind() == "Kustomization" {
            continue;
        }
        for field in ["apiVersion", "kind"] {
            p.check(d.str(&[field]).is_some_and(|s| !s.is_empty()), || {
                format!("{}: a document without {field}", d.file)
            });
        }
        p.check(!d.name().is_empty(), || {
            format!("{}: {} without metadata.name", d.file, d.kind())
        });
        p.check(
            seen.insert((
                d.kind().to_string(),
                d.namespace().to_string(),
                d.name().to_string(),
            )),
            || format!("{}: defined twice", d.id()),
        );
    }
    // Secrets in the repository are placeholders; the real ones are created by hand.
    for s in objects(docs, "Secret") {
        p.check(
            s.str(&["metadata", "labels", PLACEHOLDER_LABEL]) == Some("true"),
            || format!("{}: metadata.labels: a Secret kept in the repository must carry {PLACEHOLDER_LABEL}: \"true\"", s.id()),
        );
        p.check(at(&s.value, &["data"]).is_none(), || {
            format!(
                "{}: data: placeholders go in stringData, real values nowhere",
                s.id()
            )
        });
        for (k, v) in string_map(&s.value, &["stringData"]) {
            p.check(v.starts_with("REPLACE"), || {
                format!("{}: stringData.{k}: not a REPLACE-... placeholder", s.id())
            });
        }
    }
    p
}

fn check_kustomization(docs: &[Doc]) -> Problems {
    let mut p = Problems::default();
    let ks: Vec<&Doc> = objects(docs, "Kustomization").collect();
    p.check(ks.len() == 1, || {
        format!(
            "deploy/kubernetes: expected one kustomization.yaml (kind Kustomization), found {}",
            ks.len()
        )
    });
    let Some(k) = ks.first() else { return p };
    let resources: BTreeSet<String> = seq(&k.value, &["resources"])
        .iter()
        .filter_map(Value::as_str)
        .map(String::from)
        .collect();
    for r in &resources {
        p.check(kube_dir().join(r).exists(), || {
            format!("{}: resources: {r} does not exist", k.file)
        });
    }
    for f in yaml_files(&kube_dir()) {
        let rel = f.strip_prefix(kube_dir()).unwrap().display().to_string();
        if rel != "kustomization.yaml" {
            p.check(resources.contains(&rel), || {
                format!(
                    "{}: resources: {rel} is missing, so `kubectl apply -k` skips it",
                    k.file
                )
            });
        }
    }
    let drops_placeholders = seq(&k.value, &["patches"]).iter().any(|patch| {
        at(patch, &["target", "labelSelector"]).and_then(Value::as_str)
            == Some("sidegate/placeholder=true")
            && patch
                .get("patch")
                .and_then(Value::as_str)
                .is_some_and(|t| t.contains("$patch: delete"))
    });
    p.check(drops_placeholders, || {
        format!("{}: patches: no `$patch: delete` for labelSelector sidegate/placeholder=true, so `kubectl apply -k` would overwrite the real Secrets with placeholders", k.file)
    });
    p
}

fn check_sidegate_pods(docs: &[Doc], readme: &str) -> Problems {
    let mut p = Problems::default();
    let sgs = sidegates(docs, &mut p);
    p.check(!sgs.is_empty(), || {
        "deploy/kubernetes: no Deployment runs a sidegate container".to_string()
    });
    let sources = secret_sources(docs, readme);
    for s in &sgs {
        let id = &s.id;
        let cfg = &s.config_source;
        let ports = s.ports();
        let port_named = |name: &str| ports.iter().find(|(n, _)| n == name).map(|(_, n)| *n);

        // Listeners: reachable from outside the container, and declared as named ports.
        let listen_raw = toml_strs(&s.toml, "server", "listen");
        p.check(!listen_raw.is_empty(), || {
            format!("{cfg}: [server] listen missing (the default 127.0.0.1:4180 is unreachable from the Service)")
        });
        for a in &listen_raw {
            match a.parse::<SocketAddr>() {
                Ok(addr) => {
                    p.check(addr.ip().is_unspecified(), || format!("{cfg}: [server] listen {a}: the Service reaches the pod IP, bind 0.0.0.0"));
                    p.check(ports.iter().any(|(_, n)| *n == u64::from(addr.port())), || {
                        format!("{id}: container sidegate: ports: no containerPort {} for [server] listen {a} ({cfg})", addr.port())
                    });
                }
                Err(_) => p.add(format!("{cfg}: [server] listen {a}: not ip:port")),
            }
        }
        if let Some(first) = s.listen().first() {
            let public = port_named("http").or_else(|| port_named("https"));
            p.check(public == Some(u64::from(first.port())), || {
                format!("{id}: container sidegate: ports: the port named http is {public:?}, but [server] listen is {first} ({cfg})")
            });
        }
        let admin = match toml_str(&s.toml, "server", "admin_listen") {
            None => {
                p.add(format!("{cfg}: [server] admin_listen missing (the default 127.0.0.1:9180 is unreachable for the kubelet's probes)"));
                None
            }
            Some(a) => match a.parse::<SocketAddr>() {
                Ok(addr) => {
                    p.check(addr.ip().is_unspecified(), || format!("{cfg}: [server] admin_listen {a}: the kubelet probes the pod IP, bind 0.0.0.0"));
                    Some(addr)
                }
                Err(_) => {
                    p.add(format!("{cfg}: [server] admin_listen {a}: not ip:port (probes need the admin listener)"));
                    None
                }
            },
        };
        if let Some(admin) = admin {
            p.check(port_named("admin") == Some(u64::from(admin.port())), || {
                format!("{id}: container sidegate: ports: the port named admin is {:?}, but [server] admin_listen is {admin} ({cfg})", port_named("admin"))
            });
        }

        // Probes: admin listener, /healthz and /readyz.
        for (probe, want) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
            let Some(get) = at(&s.container, &[probe, "httpGet"]) else {
                p.add(format!("{id}: container sidegate: {probe}.httpGet missing"));
                continue;
            };
            let path = get.get("path").and_then(Value::as_str);
            p.check(path == Some(want), || {
                format!("{id}: container sidegate: {probe}.httpGet.path is {path:?}, want {want}")
            });
            let port = match get.get("port") {
                Some(Value::String(name)) => port_named(name.as_str()),
                Some(v) => v.as_u64(),
                None => None,
            };
            p.check(
                port.is_some() && port == admin.map(|a| u64::from(a.port())),
                || format!("{id}: container sidegate: {probe}.httpGet.port resolves to {port:?}, not the admin listener {admin:?} ({cfg})"),
            );
        }

        // Security context: container first, pod-level where Kubernetes allows it.
        let c = s.container.get("securityContext");
        let pod_sc = s.pod.get("securityContext");
        let either = |path: &[&str]| at_opt(c, path).or_else(|| at_opt(pod_sc, path));
        p.check(
            either(&["runAsNonRoot"]).and_then(Value::as_bool) == Some(true),
            || format!("{id}: container sidegate: securityContext.runAsNonRoot is not true"),
        );
        p.check(
            either(&["runAsUser"]).and_then(Value::as_u64) != Some(0),
            || format!("{id}: container sidegate: securityContext.runAsUser is 0"),
        );
        p.check(
            at_opt(c, &["readOnlyRootFilesystem"]).and_then(Value::as_bool) == Some(true),
            || {
                format!(
                    "{id}: container sidegate: securityContext.readOnlyRootFilesystem is not true"
                )
            },
        );
        p.check(
            at_opt(c, &["allowPrivilegeEscalation"]).and_then(Value::as_bool) == Some(false),
            || format!("{id}: container sidegate: securityContext.allowPrivilegeEscalation is not false"),
        );
        let drops: Vec<&str> = at_opt(c, &["capabilities", "drop"])
            .and_then(Value::as_sequence)
            .map(|s| s.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        p.check(drops.contains(&"ALL"), || {
            format!("{id}: container sidegate: securityContext.capabilities.drop is {drops:?}, not [ALL]")
        });
        let seccomp = either(&["seccompProfile", "type"]).and_then(Value::as_str);
        p.check(
            matches!(seccomp, Some("RuntimeDefault" | "Localhost")),
            || {
                format!(
                    "{id}: container sidegate: securityContext.seccompProfile.type is {seccomp:?}"
                )
            },
        );

        // Files named in the config: mounted, secrets from a Secret that has the key.
        let mut files = Vec::new();
        file_keys(&s.toml, "", &mut files);
        for (key, value) in files {
            let path = if value.starts_with('/') {
                value.clone()
            } else {
                format!("{}/{value}", s.config_dir)
            };
            let Some((mount, inside)) = mount_for(&s.container, &path) else {
                p.add(format!("{cfg}: {key} = {value:?}: {path} is under no volumeMount of container sidegate in {id}"));
                continue;
            };
            let volume_name = mount.get("name").and_then(Value::as_str).unwrap_or("");
            let volume = named(seq(&s.pod, &["volumes"]), volume_name);
            let leaf = key.rsplit('.').next().unwrap_or(key.as_str());
            if PUBLIC_FILE_KEYS.contains(&leaf) {
                continue;
            }
            let Some(secret) = at_opt(volume, &["secret"]) else {
                p.add(format!("{cfg}: {key} = {value:?}: mounted from volume {volume_name} of {id}, which is not a Secret"));
                continue;
            };
            let secret_name = secret
                .get("secretName")
                .and_then(Value::as_str)
                .unwrap_or("");
            let Some(secret_key) = volume_key(secret, &inside) else {
                p.add(format!("{id}: volumes: {volume_name}: items map no Secret key to {inside} ({key} in {cfg})"));
                continue;
            };
            let defs: Vec<&SecretSource> = sources
                .iter()
                .filter(|d| d.namespace == s.namespace && d.name == secret_name)
                .collect();
            p.check(defs.iter().any(|d| d.documented), || {
                format!("{id} mounts Secret {}, but neither deploy/README.md (`kubectl create secret generic {secret_name}{}`) nor a secretGenerator says how to create it",
                    qualified(&s.namespace, secret_name),
                    if s.namespace.is_empty() { String::new() } else { format!(" --namespace {}", s.namespace) })
            });
            for d in defs {
                p.check(d.keys.contains(&secret_key), || {
                    format!("{}: no key {secret_key:?}, which {key} = {value:?} needs ({cfg}); it has {:?}", d.origin, d.keys)
                });
            }
        }
    }
    p
}

/// Deployments in `namespace` whose pod labels include every `selector` pair.
fn selected<'a>(
    docs: &'a [Doc],
    namespace: &str,
    selector: &BTreeMap<String, String>,
) -> Vec<&'a Doc> {
    objects(docs, "Deployment")
        .filter(|d| d.namespace() == namespace)
        .filter(|d| {
            let labels = string_map(&d.value, &["spec", "template", "metadata", "labels"]);
            selector.iter().all(|(k, v)| labels.get(k) == Some(v))
        })
        .collect()
}

/// The container port a Service port's targetPort reaches in `deployment`.
fn target_port(deployment: &Doc, target: &Value) -> Option<u64> {
    let pod = at(&deployment.value, &["spec", "template", "spec"])?;
    let ports: Vec<(String, u64)> = pod_containers(pod)
        .into_iter()
        .flat_map(container_ports)
        .collect();
    match target {
        Value::String(name) => ports.iter().find(|(n, _)| n == name).map(|(_, n)| *n),
        v => v.as_u64().filter(|n| ports.iter().any(|(_, p)| p == n)),
    }
}

fn check_services_and_ingresses(docs: &[Doc]) -> Problems {
    let mut p = Problems::default();
    for svc in objects(docs, "Service") {
        let selector = string_map(&svc.value, &["spec", "selector"]);
        let pods = selected(docs, svc.namespace(), &selector);
        p.check(!selector.is_empty() && !pods.is_empty(), || {
            format!(
                "{}: spec.selector {selector:?} selects no Deployment's pods in deploy/kubernetes",
                svc.id()
            )
        });
        for port in seq(&svc.value, &["spec", "ports"]) {
            let name = port.get("name").and_then(Value::as_str).unwrap_or("?");
            let Some(target) = port.get("targetPort").or_else(|| port.get("port")) else {
                p.add(format!(
                    "{}: spec.ports {name}: neither targetPort nor port",
                    svc.id()
                ));
                continue;
            };
            for d in &pods {
                p.check(target_port(d, target).is_some(), || {
                    format!(
                        "{}: spec.ports {name}: targetPort {target:?} is no container port of {}",
                        svc.id(),
                        d.id()
                    )
                });
            }
        }
    }
    for ing in objects(docs, "Ingress") {
        for rule in seq(&ing.value, &["spec", "rules"]) {
            for path in seq(rule, &["http", "paths"]) {
                let Some(backend) = at(path, &["backend", "service"]) else {
                    continue;
                };
                let name = backend.get("name").and_then(Value::as_str).unwrap_or("");
                // A Service defined elsewhere is the user's own app: nothing to line up with.
                let Some(svc) = find(docs, "Service", ing.namespace(), name) else {
                    continue;
                };
                let ports = seq(&svc.value, &["spec", "ports"]);
                let ok = match (
                    at(backend, &["port", "name"]).and_then(Value::as_str),
                    at(backend, &["port", "number"]).and_then(Value::as_u64),
                ) {
                    (Some(n), _) => named(ports, n).is_some(),
                    (None, Some(num)) => ports
                        .iter()
                        .any(|sp| sp.get("port").and_then(Value::as_u64) == Some(num)),
                    (None, None) => false,
                };
                p.check(ok, || {
                    format!(
                        "{}: spec.rules backend.service {name}: port {:?} is not a port of {}",
                        ing.id(),
                        backend.get("port"),
                        svc.id()
                    )
                });
            }
        }
    }
    p
}

fn covers_host(rule: &str, host: &str) -> bool {
    let (rule, host) = (rule.to_ascii_lowercase(), host.to_ascii_lowercase());
    match rule.strip_prefix("*.") {
        Some(suffix) => host.ends_with(&format!(".{suffix}")),
        None => rule == host,
    }
}

fn check_forward_auth_ingresses(docs: &[Doc]) -> Problems {
    const AUTH_URL: &str = "nginx.ingress.kubernetes.io/auth-url";
    let mut p = Problems::default();
    let sgs = sidegates(docs, &mut p);
    let mut seen = 0;
    for ing in objects(docs, "Ingress") {
        let annotations = string_map(&ing.value, &["metadata", "annotations"]);
        let Some(auth_url) = annotations.get(AUTH_URL) else {
            continue;
        };
        seen += 1;
        let id = ing.id();
        let field = format!("metadata.annotations[{AUTH_URL}]");
        let Ok(url) = url::Url::parse(auth_url) else {
            p.add(format!("{id}: {field}: {auth_url:?} is not a URL"));
            continue;
        };
        let host = url.host_str().unwrap_or("");
        let labels: Vec<&str> = host.split('.').collect();
        let (svc_name, ns) = if host.ends_with(".svc.cluster.local")
            || host.ends_with(".svc")
            || labels.len() == 2
        {
            (labels[0], labels.get(1).copied().unwrap_or(""))
        } else if labels.len() == 1 {
            (labels[0], ing.namespace())
        } else {
            p.add(format!(
                "{id}: {field}: host {host} is not an in-cluster Service name"
            ));
            continue;
        };
        let Some(svc) = find(docs, "Service", ns, svc_name) else {
            p.add(format!(
                "{id}: {field}: Service {} is not in deploy/kubernetes",
                qualified(ns, svc_name)
            ));
            continue;
        };
        let want_port = url.port_or_known_default().map(u64::from);
        let Some(svc_port) = seq(&svc.value, &["spec", "ports"])
            .iter()
            .find(|sp| sp.get("port").and_then(Value::as_u64) == want_port)
        else {
            p.add(format!(
                "{id}: {field}: port {want_port:?} is not a port of {}",
                svc.id()
            ));
            continue;
        };
        let selector = string_map(&svc.value, &["spec", "selector"]);
        let behind: Vec<&Sidegate> = sgs
            .iter()
            .filter(|s| {
                s.namespace == ns && selector.iter().all(|(k, v)| s.pod_labels.get(k) == Some(v))
            })
            .collect();
        let [sg] = behind.as_slice() else {
            p.add(format!(
                "{id}: {field}: {} selects {} sidegate Deployments, want exactly one",
                svc.id(),
                behind.len()
            ));
            continue;
        };
        let cfg = &sg.config_source;
        let target = svc_port
            .get("targetPort")
            .or_else(|| svc_port.get("port"))
            .cloned()
            .unwrap_or(Value::Null);
        let container_port = match &target {
            Value::String(name) => sg.ports().iter().find(|(n, _)| n == name).map(|(_, n)| *n),
            v => v.as_u64(),
        };
        p.check(
            container_port.is_some_and(|cp| sg.listen().iter().any(|a| u64::from(a.port()) == cp)),
            || format!("{id}: {field}: reaches container port {container_port:?} of {}, which is not a [server] listen port ({cfg}; admin is {:?})", sg.id, sg.admin()),
        );
        let check_path = format!("{}/auth", prefix(&sg.toml));
        p.check(url.path() == check_path, || {
            format!("{id}: {field}: path {} is not {check_path}", url.path())
        });
        p.check(!toml_strs(&sg.toml, "server", "trusted_proxies").is_empty(), || {
            format!("{cfg}: [server] trusted_proxies is empty, so the ingress controller's X-Original-URI is ignored and public_paths never apply")
        });

        let passed: Vec<String> = annotations
            .get("nginx.ingress.kubernetes.io/auth-response-headers")
            .map(|v| {
                v.split(',')
                    .map(|h| h.trim().to_ascii_lowercase())
                    .collect()
            })
            .unwrap_or_default();
        for h in header_names(&sg.toml) {
            p.check(passed.contains(&h.to_ascii_lowercase()), || {
                format!("{id}: metadata.annotations[nginx.ingress.kubernetes.io/auth-response-headers]: {h} missing ({cfg} emits it)")
            });
        }
        if let Some(method) = annotations.get("nginx.ingress.kubernetes.io/auth-method") {
            p.check(method == "GET", || {
                format!("{id}: auth-method {method}: sidegate's check is GET")
            });
        }
        let public = public_host(&sg.toml).unwrap_or_default();
        let start = format!("{}/start", prefix(&sg.toml));
        match annotations
            .get("nginx.ingress.kubernetes.io/auth-signin")
            .map(|s| url::Url::parse(s))
        {
            Some(Ok(signin)) => {
                p.check(signin.host_str() == Some(public.as_str()) && signin.path() == start, || {
                    format!("{id}: auth-signin {signin} is not https://{public}{start} (public_url of {cfg})")
                });
            }
            Some(Err(e)) => p.add(format!("{id}: auth-signin: not a URL: {e}")),
            None => p.add(format!(
                "{id}: auth-signin missing: browsers without a session would see a bare 401"
            )),
        }
        // The app hosts: a login may return there, and the session cookie reaches them.
        let redirect_hosts = toml_strs(&sg.toml, "access", "allowed_redirect_hosts");
        let cookie_domain = toml_str(&sg.toml, "session", "cookie_domain")
            .map(|d| d.trim_start_matches('.').to_ascii_lowercase());
        for rule in seq(&ing.value, &["spec", "rules"]) {
            let Some(app_host) = rule.get("host").and_then(Value::as_str) else {
                continue;
            };
            if app_host.eq_ignore_ascii_case(&public) {
                continue;
            }
            p.check(redirect_hosts.iter().any(|r| covers_host(r, app_host)), || {
                format!("{id}: host {app_host}: not in [access] allowed_redirect_hosts {redirect_hosts:?} of {cfg}, so a login cannot return there")
            });
            p.check(
                cookie_domain.as_deref().is_some_and(|d| covers_host(&format!("*.{d}"), app_host) || app_host.eq_ignore_ascii_case(d)),
                || format!("{id}: host {app_host}: [session] cookie_domain {cookie_domain:?} of {cfg} does not cover it, so the session cookie never reaches the app"),
            );
        }
        // Browsers reach sidegate's own pages on its public host.
        let routed = objects(docs, "Ingress").any(|i| {
            i.namespace() == ns
                && seq(&i.value, &["spec", "rules"]).iter().any(|r| {
                    r.get("host")
                        .and_then(Value::as_str)
                        .is_some_and(|h| h.eq_ignore_ascii_case(&public))
                        && seq(r, &["http", "paths"]).iter().any(|pa| {
                            pa.get("path").and_then(Value::as_str)
                                == Some(format!("{}/", prefix(&sg.toml)).as_str())
                                && at(pa, &["backend", "service", "name"]).and_then(Value::as_str)
                                    == Some(svc_name)
                        })
                })
        });
        p.check(routed, || {
            format!("deploy/kubernetes: no Ingress routes https://{public}{}/ to Service {} (login, callback and logout live there)", prefix(&sg.toml), qualified(ns, svc_name))
        });
    }
    p.check(seen > 0, || {
        format!("deploy/kubernetes: no Ingress with {AUTH_URL}")
    });
    p
}

/// `#` comments removed, so only directives are searched.
fn nginx_code(conf: &str) -> String {
    conf.lines()
        .map(|l| match l.find('#') {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn nginx_block<'a>(code: &'a str, opener: &str) -> Option<&'a str> {
    let start = code.find(opener)? + opener.len();
    let end = code[start..].find('}')? + start;
    Some(&code[start..end])
}

fn check_nginx_site(conf: &str, toml_text: &str) -> Problems {
    const CONF: &str = "deploy/nginx/sidegate.conf";
    const TOML: &str = "deploy/nginx/sidegate.toml";
    let mut p = Problems::default();
    let code = nginx_code(conf);
    // Tokens the suite rewrites to run the site on loopback: each exactly once.
    for token in [
        "upstream sidegate {",
        "server 127.0.0.1:4180;",
        "upstream app {",
        "server 127.0.0.1:8080;",
        "server {",
        "listen 80;",
        "server_name app.example.com;",
    ] {
        let n = code.matches(token).count();
        p.check(n == 1, || {
            format!("{CONF}: `{token}` appears {n} times, want once")
        });
    }
    let toml: toml::Table = match toml::from_str(toml_text) {
        Ok(t) => t,
        Err(e) => {
            p.add(format!("{TOML}: not TOML: {e}"));
            return p;
        }
    };
    let upstream = nginx_block(&code, "upstream sidegate {")
        .and_then(|b| {
            b.split(';')
                .map(str::trim)
                .find_map(|d| d.strip_prefix("server "))
        })
        .and_then(|a| a.split_whitespace().next())
        .and_then(|a| a.parse::<SocketAddr>().ok());
    let listen = toml_strs(&toml, "server", "listen");
    p.check(
        upstream.is_some_and(|u| listen.iter().any(|l| l.parse::<SocketAddr>().ok() == Some(u))),
        || format!("{CONF}: upstream sidegate is {upstream:?}, not one of [server] listen {listen:?} in {TOML}"),
    );
    if let Some(u) = upstream.filter(|u| u.ip().is_loopback()) {
        let trusted: Vec<ipnet::IpNet> = toml_strs(&toml, "server", "trusted_proxies")
            .iter()
            .filter_map(|t| {
                t.parse::<ipnet::IpNet>()
                    .ok()
                    .or_else(|| t.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
            })
            .collect();
        p.check(trusted.iter().any(|n| n.contains(&u.ip())), || {
            format!("{TOML}: [server] trusted_proxies {trusted:?} does not contain {}, the address nginx connects from, so X-Original-URI is ignored", u.ip())
        });
    }
    p.check(!toml.contains_key("upstream"), || {
        format!("{TOML}: [upstream]: nginx proxies to the app itself; sidegate must not")
    });
    let server_name = code
        .split(';')
        .map(str::trim)
        .find_map(|d| d.strip_prefix("server_name "))
        .map(str::trim);
    p.check(server_name.map(str::to_ascii_lowercase) == public_host(&toml), || {
        format!("{CONF}: server_name {server_name:?} is not the host of [server] public_url in {TOML}")
    });
    let pre = prefix(&toml);
    let check_location = format!("location = {pre}/auth {{");
    p.check(
        nginx_block(&code, &check_location).is_some_and(|b| b.contains("internal;")),
        || format!("{CONF}: `{check_location}` missing or not `internal;`"),
    );
    p.check(code.contains(&format!("auth_request {pre}/auth;")), || {
        format!("{CONF}: no `auth_request {pre}/auth;`")
    });
    let lower = code.to_ascii_lowercase();
    for h in header_names(&toml) {
        let var = format!(
            "$upstream_http_{}",
            h.to_ascii_lowercase().replace('-', "_")
        );
        p.check(lower.contains(&var), || {
            format!("{CONF}: no auth_request_set from {var}")
        });
        let set = format!("proxy_set_header {} ", h.to_ascii_lowercase());
        p.check(lower.contains(&set), || {
            format!("{CONF}: no `proxy_set_header {h}` (client copies would reach the app)")
        });
    }
    p.check(code.contains("error_page 401"), || {
        format!("{CONF}: no `error_page 401`")
    });
    p.check(code.contains(&format!("{pre}/start?rd=")), || {
        format!("{CONF}: the login redirect does not go to {pre}/start?rd=")
    });
    p
}

// === tests ===

#[test]
fn every_manifest_document_is_a_kubernetes_object() {
    let docs = manifests();
    let mut p = check_objects(&docs);
    p.0.extend(check_kustomization(&docs).0);
    p.assert_none("deploy/kubernetes objects");
}

#[test]
fn sidegate_pods_line_up_with_their_config() {
    check_sidegate_pods(&manifests(), &readme()).assert_none("deploy/kubernetes sidegate pods");
}

#[test]
fn services_and_ingresses_reach_named_ports() {
    check_services_and_ingresses(&manifests())
        .assert_none("deploy/kubernetes Services and Ingresses");
}

#[test]
fn ingress_nginx_asks_a_sidegate_that_can_answer() {
    check_forward_auth_ingresses(&manifests())
        .assert_none("deploy/kubernetes ingress-nginx forward auth");
}

#[test]
fn nginx_site_matches_its_sidegate_toml() {
    let dir = repo().join("deploy/nginx");
    let conf =
        std::fs::read_to_string(dir.join("sidegate.conf")).expect("deploy/nginx/sidegate.conf");
    let toml =
        std::fs::read_to_string(dir.join("sidegate.toml")).expect("deploy/nginx/sidegate.toml");
    check_nginx_site(&conf, &toml).assert_none("deploy/nginx");
}

#[test]
fn every_deployed_config_loads() {
    let docs = manifests();
    let mut p = Problems::default();
    let mut configs: Vec<(String, String)> = sidegates(&docs, &mut p)
        .into_iter()
        .map(|s| {
            (
                format!("{} (used by {})", s.config_source, s.id),
                s.toml_text,
            )
        })
        .collect();
    let nginx = std::fs::read_to_string(repo().join("deploy/nginx/sidegate.toml"))
        .expect("deploy/nginx/sidegate.toml");
    configs.push(("deploy/nginx/sidegate.toml".into(), nginx));
    assert!(
        configs.len() >= 3,
        "expected the sidecar, the shared and the nginx config, found {}",
        configs.len()
    );
    for (what, text) in configs {
        if let Err(e) = load_with_test_secrets(&text) {
            p.add(format!("{what}: sidegate::config::load refused it: {e}"));
        }
    }
    p.assert_none("configs under deploy/");
}

/// The checks above must be able to fail: a sidecar with a wrong admin port, a wrong readiness
/// path, kept capabilities and secrets mounted elsewhere is reported on each count.
#[test]
fn a_broken_sidecar_is_reported() {
    let path = kube_dir().join("sidecar.yaml");
    let good = std::fs::read_to_string(&path).unwrap();
    let mut broken = good.clone();
    for (from, to) in [
        ("containerPort: 9180", "containerPort: 9999"),
        ("path: /readyz", "path: /ready"),
        ("drop: [\"ALL\"]", "drop: [\"NET_RAW\"]"),
        (
            "mountPath: /etc/sidegate/secrets",
            "mountPath: /etc/sidegate/keys",
        ),
        (
            "port: 80\n      targetPort: http",
            "port: 80\n      targetPort: web",
        ),
    ] {
        assert!(
            broken.contains(from),
            "sidecar.yaml no longer contains {from:?}: update this test"
        );
        broken = broken.replace(from, to);
    }
    let docs = parse_docs("sidecar.yaml (broken copy)", &broken);
    let mut found = check_sidegate_pods(&docs, &readme()).0;
    found.extend(check_services_and_ingresses(&docs).0);
    for expect in [
        "the port named admin",
        "readinessProbe.httpGet.path",
        "readinessProbe.httpGet.port",
        "capabilities.drop",
        "client_secret_file",
        "targetPort",
    ] {
        assert!(
            found.iter().any(|m| m.contains(expect)),
            "no problem mentioning {expect:?} for the broken sidecar; found: {found:#?}"
        );
    }
    let clean = parse_docs("sidecar.yaml", &good);
    let mut baseline = check_sidegate_pods(&clean, &readme()).0;
    baseline.extend(check_services_and_ingresses(&clean).0);
    assert!(
        baseline.is_empty(),
        "the unbroken sidecar.yaml alone has problems: {baseline:#?}"
    );
}
