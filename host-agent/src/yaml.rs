//! YAML for Kubernetes objects, on the same parser that reads `lks.yaml`
//! (yaml-rust2, under marked-yaml): manifests in, as JSON values (what the
//! API server takes), and what lks prints (`lks render`, `lks cluster create
//! --dry-run`) out.

use serde_json::{Map, Number, Value};
use yaml_rust2::{Yaml, YamlEmitter, YamlLoader};

/// Why a text is not the YAML expected.
#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    /// It does not parse.
    #[error("{0}")]
    Syntax(#[from] yaml_rust2::ScanError),
    /// It parses, but holds what JSON cannot (a NaN, an alias to nothing).
    #[error("document {document}: {what}")]
    NotJson {
        /// The document, from 1.
        document: usize,
        /// What is wrong.
        what: String,
    },
    /// It is JSON, but not of the expected shape.
    #[error("{0}")]
    Shape(#[from] serde_json::Error),
}

/// Every document of `text`, as JSON values (an empty document is `null`).
pub fn documents(text: &str) -> Result<Vec<Value>, YamlError> {
    let docs = YamlLoader::load_from_str(text)?;
    docs.iter()
        .enumerate()
        .map(|(i, d)| {
            to_json(d).map_err(|what| YamlError::NotJson {
                document: i + 1,
                what,
            })
        })
        .collect()
}

/// The first document of `text` as a `T`.
pub fn from_str<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, YamlError> {
    let first = documents(text)?.into_iter().next().unwrap_or(Value::Null);
    Ok(serde_json::from_value(first)?)
}

/// `value` as one YAML document (without the `---` that starts it).
/// Multi-line strings are literal blocks where that reads back the same
/// (the emitter cannot keep every run of trailing newlines), else quoted.
pub fn to_string(value: &Value) -> String {
    let yaml = to_yaml(value);
    let literal = emit(&yaml, true);
    if documents(&literal).is_ok_and(|d| d.first() == Some(value)) {
        return literal;
    }
    emit(&yaml, false)
}

fn emit(yaml: &Yaml, multiline: bool) -> String {
    let mut out = String::new();
    let mut emitter = YamlEmitter::new(&mut out);
    emitter.multiline_strings(multiline);
    emitter
        .dump(yaml)
        .expect("writing to a String does not fail");
    let mut out = out
        .strip_prefix("---\n")
        .or_else(|| out.strip_prefix("---"))
        .unwrap_or(&out)
        .trim_start_matches(' ')
        .to_string();
    out.push('\n');
    out
}

fn to_json(y: &Yaml) -> Result<Value, String> {
    Ok(match y {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Integer(i) => Value::Number((*i).into()),
        // An integer beyond i64 (yaml-rust2 keeps it as a real).
        Yaml::Real(s) if s.parse::<u64>().is_ok() => {
            Value::Number(s.parse::<u64>().unwrap().into())
        }
        Yaml::Real(s) => {
            let f: f64 = y.as_f64().ok_or_else(|| format!("{s:?} is not a number"))?;
            Value::Number(Number::from_f64(f).ok_or_else(|| format!("{s} has no JSON form"))?)
        }
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Array(items) => Value::Array(items.iter().map(to_json).collect::<Result<_, _>>()?),
        Yaml::Hash(h) => {
            let mut m = Map::new();
            for (k, v) in h {
                let key = match k {
                    Yaml::String(s) | Yaml::Real(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    Yaml::Boolean(b) => b.to_string(),
                    Yaml::Null => "null".into(),
                    _ => return Err("a key that is not a scalar".into()),
                };
                m.insert(key, to_json(v)?);
            }
            Value::Object(m)
        }
        Yaml::Alias(_) | Yaml::BadValue => return Err("an alias to no anchor".into()),
    })
}

fn to_yaml(v: &Value) -> Yaml {
    match v {
        Value::Null => Yaml::Null,
        Value::Bool(b) => Yaml::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Yaml::Integer(i),
            None => Yaml::Real(n.to_string()),
        },
        Value::String(s) => Yaml::String(s.clone()),
        Value::Array(items) => Yaml::Array(items.iter().map(to_yaml).collect()),
        Value::Object(m) => Yaml::Hash(
            m.iter()
                .map(|(k, v)| (Yaml::String(k.clone()), to_yaml(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_round_trip_with_strings_that_look_like_other_things() {
        let v = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "x", "labels": {"a": "true", "b": "5000", "c": "", "d": "null"}},
            "data": {"pem": "-----BEGIN-----\nabc\n\n", "colon": "a: b", "dash": "- x", "hash": "#x"},
            "spec": {"replicas": 2, "ratio": 0.5, "on": null, "list": [], "map": {}, "big": u64::MAX},
        });
        let text = to_string(&v);
        assert_eq!(documents(&text).unwrap(), vec![v], "{text}");
        let pem = json!({"a": "one\ntwo\n", "b": "x"});
        assert_eq!(to_string(&pem), "a: |\n  one\n  two\nb: x\n");
    }

    #[test]
    fn documents_anchors_and_empty_ones() {
        let docs = documents("a: &x {b: 1}\nc: *x\n---\n---\nkind: Pod\n").unwrap();
        assert_eq!(docs[0], json!({"a": {"b": 1}, "c": {"b": 1}}));
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[2], json!({"kind": "Pod"}));
        assert!(documents("a: [").is_err());
        assert!(documents("a: .nan").is_err());
    }
}
