//! One rule for overriding any setting of the configuration file: the
//! environment variable `DISCOVERY_<SECTION>_<KEY>` (`DISCOVERY_RAFT_HEARTBEAT_MS`
//! for `[raft] heartbeat_ms`) or the flag `--set section.key=value`. A value
//! is read as the setting's type (a number, `true`/`false`, text; a list or
//! table as a TOML value, a list of text also as `a,b,c`), and one that does
//! not read is refused naming the variable. Which settings exist, and
//! their types, come from the defaults themselves, so a key added later is
//! overridable without a line here. Every setting's source is kept, for
//! `discovery --print-config`; a `DISCOVERY_*` variable that is no setting
//! is told, not silently ignored. Pure: the caller hands in the environment.

use std::collections::BTreeMap;

use toml::{Table, Value};

/// Where a setting's value comes from.
pub type Sources = BTreeMap<String, String>;

/// The prefix of every variable of this rule.
pub const PREFIX: &str = "DISCOVERY_";

/// A setting's place: its section (a top-level key) and its key in it,
/// none for a top-level setting taken whole (`[zones]`, `[[scheduler]]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    pub section: String,
    pub key: Option<String>,
}

impl Place {
    /// `section.key`, as `--set` and `--print-config` spell it.
    pub fn path(&self) -> String {
        match &self.key {
            Some(key) => format!("{}.{key}", self.section),
            None => self.section.clone(),
        }
    }

    /// `DISCOVERY_SECTION_KEY`.
    pub fn variable(&self) -> String {
        format!("{PREFIX}{}", self.path().replace('.', "_")).to_uppercase()
    }
}

/// Every setting the defaults have, by its variable's name.
pub fn places(defaults: &Table) -> BTreeMap<String, Place> {
    let mut places = BTreeMap::new();
    for (section, value) in defaults {
        let whole = Place {
            section: section.clone(),
            key: None,
        };
        match value {
            // A section of named keys; one with none (a map keyed by the
            // user, as `[zones]`) is taken whole.
            Value::Table(keys) if !keys.is_empty() => {
                for key in keys.keys() {
                    let place = Place {
                        section: section.clone(),
                        key: Some(key.clone()),
                    };
                    places.insert(place.variable(), place);
                }
            }
            _ => {
                places.insert(whole.variable(), whole);
            }
        }
    }
    places
}

/// The default at `place` (its type tells how to read an override).
fn default_at<'a>(defaults: &'a Table, place: &Place) -> Option<&'a Value> {
    let top = defaults.get(&place.section)?;
    match &place.key {
        Some(key) => top.as_table()?.get(key),
        None => Some(top),
    }
}

/// Reads `raw` as a value of the type of `default`.
pub fn read(default: &Value, raw: &str) -> Result<Value, String> {
    let raw = raw.trim();
    Ok(match default {
        Value::String(_) => Value::String(raw.to_string()),
        Value::Integer(_) => Value::Integer(
            raw.replace('_', "")
                .parse()
                .map_err(|_| format!("{raw:?} is not a whole number"))?,
        ),
        Value::Float(_) => Value::Float(
            raw.parse()
                .map_err(|_| format!("{raw:?} is not a number"))?,
        ),
        Value::Boolean(_) => Value::Boolean(match raw {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => return Err(format!("{raw:?} is not true or false")),
        }),
        Value::Datetime(_) => raw
            .parse()
            .map(Value::Datetime)
            .map_err(|_| format!("{raw:?} is not a date"))?,
        Value::Array(items) => match toml_value(raw) {
            Ok(Value::Array(list)) => Value::Array(list),
            // `a,b,c` for a list of text.
            _ if items.iter().all(Value::is_str) && !raw.starts_with('[') => Value::Array(
                raw.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| Value::String(s.to_string()))
                    .collect(),
            ),
            _ => return Err(format!("{raw:?} is not a TOML list ([...])")),
        },
        Value::Table(_) => match toml_value(raw) {
            Ok(Value::Table(table)) => Value::Table(table),
            _ => return Err(format!("{raw:?} is not a TOML table ({{...}})")),
        },
    })
}

fn toml_value(raw: &str) -> Result<Value, toml::de::Error> {
    let mut table: Table = toml::from_str(&format!("v = {raw}"))?;
    Ok(table.remove("v").unwrap_or(Value::Boolean(false)))
}

/// Sets `place` in `table` to `value`.
fn set(table: &mut Table, place: &Place, value: Value) {
    match &place.key {
        None => {
            table.insert(place.section.clone(), value);
        }
        Some(key) => {
            let section = table
                .entry(place.section.clone())
                .or_insert_with(|| Value::Table(Table::new()));
            if let Value::Table(section) = section {
                section.insert(key.clone(), value);
            }
        }
    }
}

/// Applies the `DISCOVERY_<SECTION>_<KEY>` variables of `env` to `table`,
/// recording their sources. Variables in `elsewhere` (read by the named
/// flags, or by other programs) are left alone; what is left, neither a
/// setting nor elsewhere, comes back as a warning.
pub fn apply_env(
    table: &mut Table,
    defaults: &Table,
    env: &[(String, String)],
    elsewhere: &[&str],
    sources: &mut Sources,
) -> Result<Vec<String>, String> {
    let places = places(defaults);
    let mut warnings = Vec::new();
    for (name, raw) in env {
        if !name.starts_with(PREFIX) {
            continue;
        }
        match places.get(name) {
            Some(place) => {
                let default = default_at(defaults, place).ok_or_else(|| name.clone())?;
                let value = read(default, raw).map_err(|e| format!("{name}: {e}"))?;
                set(table, place, value);
                sources.insert(place.path(), format!("env {name}"));
            }
            None if elsewhere.contains(&name.as_str()) => {}
            None => warnings.push(unknown(name, &places)),
        }
    }
    Ok(warnings)
}

/// Applies `--set section.key=value` flags to `table`.
pub fn apply_sets(
    table: &mut Table,
    defaults: &Table,
    sets: &[String],
    sources: &mut Sources,
) -> Result<(), String> {
    let places = places(defaults);
    for set_flag in sets {
        let (path, raw) = set_flag
            .split_once('=')
            .ok_or_else(|| format!("--set {set_flag}: expected section.key=value"))?;
        let place = places
            .values()
            .find(|p| p.path() == path.trim())
            .ok_or_else(|| {
                format!("--set {set_flag}: no setting {path} (see discovery --print-config)")
            })?;
        let default = default_at(defaults, place).ok_or_else(|| path.to_string())?;
        let value = read(default, raw).map_err(|e| format!("--set {path}: {e}"))?;
        set(table, place, value);
        sources.insert(place.path(), format!("--set {path}"));
    }
    Ok(())
}

/// What to say of a `DISCOVERY_*` variable that is no setting: the
/// closest setting's variable, when one shares most of its name.
fn unknown(name: &str, places: &BTreeMap<String, Place>) -> String {
    let shared = |known: &str| {
        name.chars()
            .zip(known.chars())
            .take_while(|(a, b)| a == b)
            .count()
    };
    let closest = places
        .keys()
        .max_by_key(|known| shared(known))
        .filter(|known| shared(known) > PREFIX.len() + 3);
    let hint = closest.map_or(String::new(), |c| format!(" (did you mean {c}?)"));
    format!(
        "environment variable {name} is not a setting and is ignored{hint}: settings are \
         DISCOVERY_<SECTION>_<KEY>; discovery --print-config lists them"
    )
}

/// Every key of `table` (a config as TOML), `section.key`, with its value.
pub fn flatten(table: &Table) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (section, value) in table {
        match value {
            Value::Table(keys) if !keys.is_empty() => {
                for (key, v) in keys {
                    out.push((format!("{section}.{key}"), v.clone()));
                }
            }
            other => out.push((section.clone(), other.clone())),
        }
    }
    out
}

/// The settings `table` has, as TOML, each with its source from `sources`
/// (`default` when none); the values of `secret` keys are not shown.
pub fn describe(table: &Table, sources: &Sources, secret: &[&str]) -> String {
    let mut out = String::new();
    let mut section_now = None;
    // Top-level values first: after a `[section]` header they would be
    // read as its keys.
    let mut settings = flatten(table);
    settings.sort_by_key(|(path, _)| path.contains('.'));
    for (path, value) in settings {
        let (section, key) = match path.split_once('.') {
            Some((s, k)) => (s.to_string(), k.to_string()),
            None => (String::new(), path.clone()),
        };
        // A table given whole (`DISCOVERY_ZONES`) is the source of its keys.
        let source = sources
            .get(&path)
            .or_else(|| sources.get(&section))
            .map_or("default", String::as_str);
        if section_now.as_ref() != Some(&section) {
            if !section.is_empty() {
                out.push_str(&format!("\n[{section}]\n"));
            }
            section_now = Some(section);
        }
        let shown = if secret.contains(&path.as_str()) {
            let set = value.as_str().is_some_and(|s| !s.is_empty());
            format!("\"{}\"", if set { "(set, not shown)" } else { "" })
        } else {
            value.to_string()
        };
        out.push_str(&format!("{key} = {shown}  # {source}\n"));
    }
    out.trim_start().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Table {
        toml::from_str(
            r#"
            zones = {}
            [raft]
            heartbeat_ms = 50
            [zone_stream]
            keep_changes = 10
            [security]
            allow_write_from = []
            public_status = true
            admin_token = ""
            [log]
            level = "info"
            "#,
        )
        .unwrap()
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_key_has_one_variable_and_sections_with_underscores_read_right() {
        let places = places(&defaults());
        assert_eq!(
            places["DISCOVERY_ZONE_STREAM_KEEP_CHANGES"].path(),
            "zone_stream.keep_changes"
        );
        assert_eq!(
            places["DISCOVERY_RAFT_HEARTBEAT_MS"].path(),
            "raft.heartbeat_ms"
        );
        assert_eq!(places["DISCOVERY_ZONES"].path(), "zones");
    }

    #[test]
    fn variables_are_read_as_their_settings_types() {
        let (d, mut table, mut sources) = (defaults(), Table::new(), Sources::new());
        let warnings = apply_env(
            &mut table,
            &d,
            &env(&[
                ("DISCOVERY_RAFT_HEARTBEAT_MS", "100"),
                (
                    "DISCOVERY_SECURITY_ALLOW_WRITE_FROM",
                    "10.0.0.0/8, 127.0.0.1",
                ),
                ("DISCOVERY_SECURITY_PUBLIC_STATUS", "false"),
                ("DISCOVERY_ZONES", r#"{ sh002 = ["10.2.0.1:7271"] }"#),
                ("DISCOVERY_LOG_LEVEL", "debug"),
                ("DISCOVERY_ZONE", "sh001"),
                ("HOME", "/root"),
            ]),
            &["DISCOVERY_ZONE"],
            &mut sources,
        )
        .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(table["raft"]["heartbeat_ms"].as_integer(), Some(100));
        assert_eq!(
            table["security"]["allow_write_from"],
            Value::Array(vec!["10.0.0.0/8".into(), "127.0.0.1".into()])
        );
        assert_eq!(table["security"]["public_status"].as_bool(), Some(false));
        assert!(table["zones"]["sh002"].is_array());
        assert_eq!(
            sources["raft.heartbeat_ms"],
            "env DISCOVERY_RAFT_HEARTBEAT_MS"
        );
    }

    #[test]
    fn a_value_that_does_not_read_is_refused_naming_the_variable() {
        let (d, mut table, mut sources) = (defaults(), Table::new(), Sources::new());
        let e = apply_env(
            &mut table,
            &d,
            &env(&[("DISCOVERY_RAFT_HEARTBEAT_MS", "fast")]),
            &[],
            &mut sources,
        )
        .unwrap_err();
        assert!(
            e.contains("DISCOVERY_RAFT_HEARTBEAT_MS") && e.contains("fast"),
            "{e}"
        );
        let e = apply_sets(&mut table, &d, &["raft.nothing=1".into()], &mut sources).unwrap_err();
        assert!(e.contains("no setting raft.nothing"), "{e}");
    }

    #[test]
    fn an_unknown_variable_is_told_with_the_closest_setting() {
        let (d, mut table, mut sources) = (defaults(), Table::new(), Sources::new());
        let warnings = apply_env(
            &mut table,
            &d,
            &env(&[("DISCOVERY_RAFT_HEARTBEAT", "100")]),
            &[],
            &mut sources,
        )
        .unwrap();
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("DISCOVERY_RAFT_HEARTBEAT is not a setting")
                && warnings[0].contains("did you mean DISCOVERY_RAFT_HEARTBEAT_MS"),
            "{warnings:?}"
        );
    }

    #[test]
    fn the_description_names_sources_and_hides_secrets() {
        let mut table = defaults();
        set(
            &mut table,
            &Place {
                section: "security".into(),
                key: Some("admin_token".into()),
            },
            "s3cret".into(),
        );
        table.insert(
            "zones".into(),
            toml::from_str::<Value>(r#"sh002 = ["10.2.0.1:7271"]"#).unwrap(),
        );
        let mut sources = Sources::new();
        sources.insert("raft.heartbeat_ms".into(), "--set raft.heartbeat_ms".into());
        sources.insert("zones".into(), "env DISCOVERY_ZONES".into());
        let text = describe(&table, &sources, &["security.admin_token"]);
        // It reads back as TOML, top-level settings outside any section.
        let back: Table = toml::from_str(&text.replace("(set, not shown)", "")).unwrap();
        assert!(
            back["zones"].is_table() && back["raft"]["heartbeat_ms"].is_integer(),
            "{text}"
        );
        assert!(
            text.contains("heartbeat_ms = 50  # --set raft.heartbeat_ms"),
            "{text}"
        );
        assert!(text.contains("level = \"info\"  # default"), "{text}");
        assert!(
            text.contains("sh002 = [\"10.2.0.1:7271\"]  # env DISCOVERY_ZONES"),
            "{text}"
        );
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("(set, not shown)"), "{text}");
    }
}
