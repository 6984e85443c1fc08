//! `--config FILE`: a TOML file whose keys are a subcommand's long options. It is turned into
//! options placed before those on the command line, which therefore win; one parser checks
//! both, so a bad value in the file is reported like a bad flag.

use std::ffi::OsString;
use std::path::Path;

use anyhow::{Context, bail};

/// Expands `--config FILE` (or `--config=FILE`) after `subcommand` in `args` into options.
/// `known` lists the subcommand's long option names, to name unknown keys.
pub fn expand(args: Vec<OsString>, subcommand: &str, known: &[String]) -> anyhow::Result<Vec<OsString>> {
    let Some(at) = args.iter().position(|a| a == subcommand) else { return Ok(args) };
    let mut file = None;
    let mut rest = Vec::new();
    let mut iter = args[at + 1..].iter();
    while let Some(arg) = iter.next() {
        let text = arg.to_string_lossy();
        if text == "--config" {
            file = Some(iter.next().context("--config needs a file")?.clone());
        } else if let Some(value) = text.strip_prefix("--config=") {
            file = Some(OsString::from(value));
        } else {
            rest.push(arg.clone());
        }
    }
    let Some(file) = file else { return Ok(args) };
    let from_file = options(Path::new(&file), known)?;
    let mut expanded: Vec<OsString> = args[..=at].to_vec();
    expanded.extend(from_file);
    expanded.extend(rest);
    Ok(expanded)
}

fn options(file: &Path, known: &[String]) -> anyhow::Result<Vec<OsString>> {
    let text = std::fs::read_to_string(file).with_context(|| format!("--config {}", file.display()))?;
    let table: toml::Table =
        text.parse().with_context(|| format!("--config {}: not valid TOML", file.display()))?;
    let mut options = Vec::new();
    for (key, value) in table {
        if key == "config" || !known.contains(&key) {
            bail!(
                "--config {}: unknown key `{key}` (keys are the option names, e.g. `uploads`, `param`)",
                file.display()
            );
        }
        let flag = OsString::from(format!("--{key}"));
        let scalar = |v: &toml::Value| -> anyhow::Result<String> {
            Ok(match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                other => bail!("--config {}: key `{key}` cannot be {}", file.display(), other.type_str()),
            })
        };
        match &value {
            toml::Value::Boolean(true) => options.push(flag),
            toml::Value::Boolean(false) => {}
            toml::Value::Array(items) => {
                for item in items {
                    options.push(flag.clone());
                    options.push(scalar(item)?.into());
                }
            }
            // `param = { min-face-size = 40 }` as well as `param = ["min-face-size=40"]`.
            toml::Value::Table(entries) if key == "param" => {
                for (name, v) in entries {
                    options.push(flag.clone());
                    let v = match v {
                        toml::Value::Boolean(b) => b.to_string(),
                        other => scalar(other)?,
                    };
                    options.push(format!("{name}={v}").into());
                }
            }
            other => {
                options.push(flag);
                options.push(scalar(other)?.into());
            }
        }
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keys_become_options_before_the_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.toml");
        std::fs::write(
            &file,
            "uploads = \"/u\"\ndry-run = true\nparam = { min-face-size = 40 }\nbatch-size = 8\n",
        )
        .unwrap();
        let known: Vec<String> = ["uploads", "dry-run", "param", "batch-size"].map(String::from).to_vec();
        let args: Vec<OsString> =
            ["refacen", "regenerate", "--config", file.to_str().unwrap(), "--batch-size", "4"]
                .map(OsString::from)
                .to_vec();
        let expanded = expand(args, "regenerate", &known).unwrap();
        let text: Vec<String> = expanded.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(
            text,
            [
                "refacen",
                "regenerate",
                "--batch-size",
                "8",
                "--dry-run",
                "--param",
                "min-face-size=40",
                "--uploads",
                "/u",
                "--batch-size",
                "4"
            ]
        );
        std::fs::write(&file, "upload = \"/u\"\n").unwrap();
        let args: Vec<OsString> =
            ["refacen", "regenerate", "--config", file.to_str().unwrap()].map(OsString::from).to_vec();
        let err = expand(args, "regenerate", &known).unwrap_err().to_string();
        assert!(err.contains("unknown key `upload`"), "{err}");
    }
}
