//! The options that split a migration between processes (`--shard`, the schedulers'
//! environment, the older `--every-other`) and scope a run (`--photos`, `--include`,
//! `--exclude`), shared by `regenerate` and `status`.

use std::path::{Path, PathBuf};

use anyhow::bail;
use clap::Args;

use refacen_pipeline::{Glob, Scope, Shard, ShardSource, Share, scope, shard};

#[derive(Args, Debug, Clone)]
pub struct ShareArgs {
    /// Take shard K of N (0-based: 0/4 to 3/4): the photos whose Uploads-relative path hashes
    /// to K (the faces whose id does, with `--regenerate facens`), whatever else is in
    /// Uploads, so photos added or removed mid-run move no other photo between shards.
    /// Without it, a Kubernetes Indexed Job's JOB_COMPLETION_INDEX with REFACEN_SHARDS, or a
    /// Slurm array's SLURM_ARRAY_TASK_ID with SLURM_ARRAY_TASK_COUNT (or MIN/MAX), is used.
    #[arg(long, value_name = "K/N")]
    pub shard: Option<Shard>,

    /// The older split, kept for existing command lines: every N-th photo of the sorted walk
    /// (every N-th face with `--regenerate facens`). A photo added mid-run shifts later ones
    /// to other hosts; prefer --shard K/N.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub every_other: u64,

    /// Which share this host takes with --every-other: 0..N-1 (prefer --shard K/N).
    #[arg(long, value_name = "K", default_value_t = 0)]
    pub every_other_offset: u64,
}

/// How a run's share was chosen, for its first line.
pub struct Chosen {
    pub share: Share,
    /// What the first line of the run says; None for a run over everything.
    pub announcement: Option<String>,
}

impl ShareArgs {
    /// The share from the options, or else from the scheduler's environment (`var`).
    pub fn resolve(&self, var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Chosen> {
        let every_other = self.every_other != 1 || self.every_other_offset != 0;
        if self.every_other_offset >= self.every_other {
            bail!(
                "--every-other-offset {} must be below --every-other {}",
                self.every_other_offset,
                self.every_other
            );
        }
        let engine = shard::from_engine(&var);
        match (self.shard, every_other) {
            (Some(_), true) => bail!(
                "--shard and --every-other are two ways to split a run; give one (--shard K/N is the one \
                 that stays stable when Uploads changes)"
            ),
            (Some(shard), false) => Ok(Chosen {
                share: Share::Shard(shard),
                announcement: Some(format!("shard {shard} (from {})", ShardSource::Flag)),
            }),
            (None, true) => Ok(Chosen {
                share: Share::EveryOther { every: self.every_other, offset: self.every_other_offset },
                announcement: Some(format!(
                    "share {} of every {} photos in walk order (--every-other; --shard K/N is stable when \
                     Uploads changes)",
                    self.every_other_offset, self.every_other
                )),
            }),
            (None, false) => match engine? {
                Some((shard, source)) => Ok(Chosen {
                    share: Share::Shard(shard),
                    announcement: Some(format!("shard {shard} (from the {source})")),
                }),
                None => Ok(Chosen { share: Share::ALL, announcement: None }),
            },
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct ScopeArgs {
    /// Only the photos listed in FILE (`-`: stdin): paths relative to Uploads, one per line.
    /// Paths that leave Uploads are refused.
    #[arg(long, value_name = "FILE")]
    pub photos: Option<PathBuf>,

    /// Only photos whose Uploads-relative path matches GLOB (`*` within a folder, `**` across
    /// folders: `2024/**`, `**/*.heic`); repeatable: any one may match.
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,

    /// Leave out photos whose Uploads-relative path matches GLOB; repeatable.
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
}

impl ScopeArgs {
    pub fn scope(&self, uploads: &Path, own_dirs: &[PathBuf]) -> anyhow::Result<Scope> {
        let globs = |option, patterns: &[String]| -> anyhow::Result<Vec<Glob>> {
            Ok(patterns.iter().map(|p| Glob::new(option, p)).collect::<Result<_, _>>()?)
        };
        let photos = match &self.photos {
            Some(list) => Some(scope::read_photo_list(list, uploads, own_dirs)?),
            None => None,
        };
        Ok(Scope {
            photos,
            include: globs("include", &self.include)?,
            exclude: globs("exclude", &self.exclude)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(shard: Option<&str>, every: u64, offset: u64) -> ShareArgs {
        ShareArgs { shard: shard.map(|s| s.parse().unwrap()), every_other: every, every_other_offset: offset }
    }

    #[test]
    fn flags_win_over_the_environment_and_do_not_mix() {
        let k8s = |n: &str| match n {
            "JOB_COMPLETION_INDEX" => Some("1".to_string()),
            "REFACEN_SHARDS" => Some("4".to_string()),
            _ => None,
        };
        let chosen = args(None, 1, 0).resolve(k8s).unwrap();
        assert!(matches!(chosen.share, Share::Shard(Shard { index: 1, count: 4 })));
        assert!(chosen.announcement.unwrap().contains("Kubernetes"));
        let chosen = args(Some("3/8"), 1, 0).resolve(k8s).unwrap();
        assert!(matches!(chosen.share, Share::Shard(Shard { index: 3, count: 8 })));
        assert!(chosen.announcement.unwrap().contains("--shard"));
        let e = args(Some("0/2"), 2, 1).resolve(|_| None).err().unwrap().to_string();
        assert!(e.contains("--shard and --every-other"), "{e}");
        let e = args(None, 2, 2).resolve(|_| None).err().unwrap().to_string();
        assert!(e.contains("must be below"), "{e}");
        assert!(args(None, 1, 0).resolve(|_| None).unwrap().announcement.is_none());
        let half = |n: &str| (n == "JOB_COMPLETION_INDEX").then(|| "0".to_string());
        let e = args(None, 1, 0).resolve(half).err().unwrap().to_string();
        assert!(e.contains("REFACEN_SHARDS"), "{e}");
    }
}
