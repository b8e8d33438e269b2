//! Registering lodge-runc with container engines: Docker's daemon.json gets a `runtimes` entry,
//! merged into what is there (every other key and runtime kept, the file's mode kept), and
//! removed again at uninstall. A file that is not a JSON object is left alone with an error.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum EngineError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a JSON object ({reason}); not touching it")]
    NotAnObject { path: PathBuf, reason: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> EngineError + '_ {
    move |source| EngineError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn load(path: &Path) -> Result<Map<String, Value>, EngineError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Map::new()),
        Err(e) => return Err(io(path)(e)),
    };
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(EngineError::NotAnObject {
            path: path.into(),
            reason: "another JSON value".into(),
        }),
        Err(e) => Err(EngineError::NotAnObject {
            path: path.into(),
            reason: e.to_string(),
        }),
    }
}

fn store(path: &Path, m: Map<String, Value>) -> Result<(), EngineError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(path))?;
    }
    let tmp = path.with_extension("json.lodge-tmp");
    let text = serde_json::to_string_pretty(&Value::Object(m)).expect("JSON serializes") + "\n";
    std::fs::write(&tmp, text).map_err(io(&tmp))?;
    if let Ok(md) = std::fs::metadata(path) {
        std::fs::set_permissions(&tmp, md.permissions()).map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Adds (or updates) runtime `name` → `runtime_path` in Docker's `config`. Returns whether the
/// file changed.
pub fn add_docker_runtime(
    config: &Path,
    name: &str,
    runtime_path: &Path,
) -> Result<bool, EngineError> {
    let mut m = load(config)?;
    let entry = serde_json::json!({"path": runtime_path});
    let runtimes = m
        .entry("runtimes")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(runtimes) = runtimes else {
        return Err(EngineError::NotAnObject {
            path: config.into(),
            reason: "\"runtimes\" is not an object".into(),
        });
    };
    if runtimes.get(name) == Some(&entry) {
        return Ok(false);
    }
    runtimes.insert(name.into(), entry);
    store(config, m)?;
    Ok(true)
}

/// Removes runtime `name`. An emptied `runtimes` stays, as `{}`: on SIGHUP dockerd rereads its
/// runtimes only when the file has that key (and only from a file that exists).
pub fn remove_docker_runtime(config: &Path, name: &str) -> Result<bool, EngineError> {
    if !config.exists() {
        return Ok(false);
    }
    let mut m = load(config)?;
    let Some(Value::Object(runtimes)) = m.get_mut("runtimes") else {
        return Ok(false);
    };
    if runtimes.remove(name).is_none() {
        return Ok(false);
    }
    store(config, m)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_and_removes_without_clobbering() {
        let dir = std::env::temp_dir().join(format!("lodge-engines-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("daemon.json");
        std::fs::write(
            &f,
            r#"{"log-level": "warn", "runtimes": {"crun": {"path": "/usr/bin/crun"}}}"#,
        )
        .unwrap();
        let bin = Path::new("/usr/local/bin/lodge-runc");
        assert!(add_docker_runtime(&f, "lodge-runc", bin).unwrap());
        assert!(
            !add_docker_runtime(&f, "lodge-runc", bin).unwrap(),
            "idempotent"
        );
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        assert_eq!(v["log-level"], "warn");
        assert_eq!(v["runtimes"]["crun"]["path"], "/usr/bin/crun");
        assert_eq!(
            v["runtimes"]["lodge-runc"]["path"],
            "/usr/local/bin/lodge-runc"
        );
        assert!(remove_docker_runtime(&f, "lodge-runc").unwrap());
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        assert!(v["runtimes"].get("lodge-runc").is_none());
        assert_eq!(v["runtimes"]["crun"]["path"], "/usr/bin/crun");
        // A file of ours alone keeps an empty "runtimes", so that dockerd's reload drops ours.
        let g = dir.join("new.json");
        add_docker_runtime(&g, "lodge-runc", bin).unwrap();
        remove_docker_runtime(&g, "lodge-runc").unwrap();
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&g).unwrap()).unwrap();
        assert_eq!(v, serde_json::json!({"runtimes": {}}));
        // Not JSON: left alone.
        std::fs::write(&f, "# comment\n").unwrap();
        assert!(add_docker_runtime(&f, "lodge-runc", bin).is_err());
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "# comment\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
