//! Where `mobula up` keeps its storage nodes: the copy-on-write btrfs volume the design is built
//! on whenever it can be had, else a plain directory — and the words saying which and why.
//!
//! `--volume auto` (the default): a `<data>/nodes` already on btrfs is used as it is; else, as
//! root with `mkfs.btrfs` and loop devices, a sparse btrfs image `<data>/nodes.img` is made (or
//! reopened) and loop-mounted on `<data>/nodes`; else a plain directory, with the reason. Nodes
//! that already hold data in a plain `<data>/nodes` stay there (mounting over them would hide
//! them). `--volume btrfs` fails instead of falling back; `--volume plain` opts out.

use std::path::{Path, PathBuf};

use mobula_storage_node::volume::{btrfs, loopback};

/// The `--volume` choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum VolumeChoice {
    /// btrfs when it can be had here, else a plain directory (saying why).
    Auto,
    /// btrfs or nothing.
    Btrfs,
    /// A plain directory.
    Plain,
}

/// What the machine and the data directory offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// `<data>/nodes` is on btrfs already.
    pub nodes_on_btrfs: bool,
    /// `<data>/nodes` holds node directories on a plain filesystem (and no image exists).
    pub plain_nodes_exist: bool,
    /// Why a btrfs image cannot be loop-mounted here, if it cannot.
    pub unavailable: Option<String>,
}

/// What `up` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Use `<data>/nodes` as it is (btrfs: true).
    AsIs { btrfs: bool, why: String },
    /// Make or reopen the image and mount it.
    Image(PathBuf),
}

/// Decide (pure: the facts are gathered by [`facts`]).
pub fn decide(
    choice: VolumeChoice,
    image: Option<&Path>,
    default_image: &Path,
    f: &Facts,
) -> anyhow::Result<Plan> {
    if f.nodes_on_btrfs {
        return Ok(Plan::AsIs {
            btrfs: true,
            why: "already on btrfs".into(),
        });
    }
    let image = image.unwrap_or(default_image).to_path_buf();
    match choice {
        VolumeChoice::Plain => Ok(Plan::AsIs {
            btrfs: false,
            why: "--volume plain".into(),
        }),
        VolumeChoice::Btrfs => match &f.unavailable {
            Some(why) => anyhow::bail!("a btrfs volume was asked for, but {why}"),
            None => Ok(Plan::Image(image)),
        },
        VolumeChoice::Auto => match &f.unavailable {
            _ if f.plain_nodes_exist && !image.exists() => Ok(Plan::AsIs {
                btrfs: false,
                why: "its nodes already keep data there".into(),
            }),
            Some(why) => Ok(Plan::AsIs {
                btrfs: false,
                why: format!("no btrfs image: {why}"),
            }),
            None => Ok(Plan::Image(image)),
        },
    }
}

/// The facts about `nodes` (`<data>/nodes`) on this machine.
pub fn facts(nodes: &Path) -> Facts {
    let plain_nodes_exist = std::fs::read_dir(nodes).is_ok_and(|mut d| d.next().is_some());
    Facts {
        nodes_on_btrfs: btrfs::is_btrfs(nodes),
        plain_nodes_exist,
        unavailable: loopback::unavailable(),
    }
}

/// Prepare `<data>/nodes` as `choice` asks; returns the line to print and whether an image was
/// mounted (to unmount at stop).
pub fn prepare(
    data: &Path,
    choice: VolumeChoice,
    image: Option<&Path>,
    size: u64,
) -> anyhow::Result<(String, bool)> {
    let nodes = data.join("nodes");
    let plan = decide(choice, image, &data.join("nodes.img"), &facts(&nodes))?;
    match plan {
        Plan::AsIs { btrfs: true, why } => Ok((
            format!("storage nodes on btrfs at {} ({why})", nodes.display()),
            false,
        )),
        Plan::AsIs { btrfs: false, why } => Ok((
            format!(
                "storage nodes on a plain directory {} ({why}); snapshots are hard-link farms \
                 and clones copies",
                nodes.display()
            ),
            false,
        )),
        Plan::Image(image) => {
            let existed = image.exists();
            loopback::mount(&image, size, &nodes, true)
                .map_err(|e| anyhow::anyhow!("btrfs image {}: {e}", image.display()))?;
            Ok((
                format!(
                    "storage nodes on btrfs image {} ({}, sparse, zstd; `--volume plain` opts \
                     out)",
                    image.display(),
                    if existed { "reopened" } else { "new" }
                ),
                true,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(on_btrfs: bool, plain: bool, unavailable: Option<&str>) -> Facts {
        Facts {
            nodes_on_btrfs: on_btrfs,
            plain_nodes_exist: plain,
            unavailable: unavailable.map(String::from),
        }
    }

    #[test]
    fn auto_takes_btrfs_when_it_can_and_says_why_not() {
        let img = Path::new("/nonexistent/d/nodes.img");
        let d = |c, f: &Facts| decide(c, None, img, f);
        use VolumeChoice::*;
        assert_eq!(
            d(Auto, &facts(false, false, None)).unwrap(),
            Plan::Image(img.into())
        );
        match d(Auto, &facts(false, false, Some("needs root"))).unwrap() {
            Plan::AsIs { btrfs: false, why } => assert!(why.contains("needs root"), "{why}"),
            p => panic!("{p:?}"),
        }
        // Existing plain nodes are not hidden under a new mount.
        assert!(matches!(
            d(Auto, &facts(false, true, None)).unwrap(),
            Plan::AsIs { btrfs: false, .. }
        ));
        assert!(matches!(
            d(Plain, &facts(false, false, None)).unwrap(),
            Plan::AsIs { btrfs: false, .. }
        ));
        assert!(d(Btrfs, &facts(false, false, Some("no mkfs.btrfs"))).is_err());
        assert!(matches!(
            d(Auto, &facts(true, true, Some("x"))).unwrap(),
            Plan::AsIs { btrfs: true, .. }
        ));
        let mine = Path::new("/x/mine.img");
        assert_eq!(
            decide(Btrfs, Some(mine), img, &facts(false, true, None)).unwrap(),
            Plan::Image(mine.into())
        );
    }
}
