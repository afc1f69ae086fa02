//! Image tarballs → a root file system tree.
//!
//! Three inputs are recognised by content: a `docker save` tarball (`manifest.json` lists the
//! layer files), an OCI image layout (`index.json` → manifest blob → layer blobs) and anything
//! else as a plain rootfs tarball (one layer). Layers may be plain, gzip or zstd tar streams.
//! They are applied in order: `.wh.NAME` deletes NAME from the layers below, `.wh..wh..opq`
//! empties its directory of everything the layers below put there. Entries are unpacked with
//! `tar`'s `unpack_in` (no `..`, no writing through symbolic links out of the tree); existing
//! non-directories are removed before being replaced, device nodes are skipped, and owners are
//! shifted by the tasks' id base so the image's ids are the task's ids.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use serde_json::Value;

use super::Imported;

/// Where one member of the outer tarball lives.
#[derive(Debug, Clone, Copy)]
struct Member {
    offset: u64,
    size: u64,
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn decoder<'a>(r: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
    let mut r = BufReader::new(r);
    let head = r.fill_buf()?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(r))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(r)?)
    } else {
        Box::new(r)
    })
}

fn index(file: &Path) -> io::Result<Vec<(String, Member)>> {
    let mut ar = tar::Archive::new(File::open(file)?);
    let mut out = Vec::new();
    for e in ar.entries()? {
        let e = e?;
        let name = e
            .path()?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        out.push((
            name,
            Member {
                offset: e.raw_file_position(),
                size: e.size(),
            },
        ));
    }
    Ok(out)
}

fn open_member(file: &Path, m: Member) -> io::Result<impl Read> {
    let mut f = File::open(file)?;
    f.seek(SeekFrom::Start(m.offset))?;
    Ok(f.take(m.size))
}

fn read_json(file: &Path, m: Member) -> io::Result<Value> {
    if m.size > 16 << 20 {
        return Err(bad("image metadata file over 16 MiB"));
    }
    serde_json::from_reader(open_member(file, m)?).map_err(|e| bad(format!("image metadata: {e}")))
}

/// Import `tarball` into the empty directory `rootfs`.
pub fn import(tarball: &Path, rootfs: &Path, id_base: u32) -> io::Result<Imported> {
    // A compressed outer file is a compressed rootfs tarball (or a compressed `docker save`):
    // decompress it next to the tree first so members can be read in any order.
    let mut head = [0u8; 4];
    let n = File::open(tarball)?.read(&mut head)?;
    let plain_tmp;
    let plain = if head[..n].starts_with(&[0x1f, 0x8b])
        || head[..n].starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
    {
        let mut tmp = tempfile::NamedTempFile::new_in(rootfs.parent().unwrap_or(rootfs))?;
        io::copy(&mut decoder(File::open(tarball)?)?, &mut tmp)?;
        plain_tmp = tmp;
        plain_tmp.path().to_path_buf()
    } else {
        tarball.to_path_buf()
    };
    let members = index(&plain).map_err(|e| bad(format!("not a tar file: {e}")))?;
    let find = |name: &str| members.iter().find(|(n, _)| n == name).map(|(_, m)| *m);
    let (format, layers): (&'static str, Vec<Member>) = if let Some(m) = find("manifest.json") {
        let v = read_json(&plain, m)?;
        let names = v[0]["Layers"]
            .as_array()
            .ok_or_else(|| bad("manifest.json: no Layers"))?;
        let layers = names
            .iter()
            .map(|n| {
                let n = n.as_str().unwrap_or_default();
                find(n).ok_or_else(|| bad(format!("manifest.json names missing layer {n}")))
            })
            .collect::<io::Result<_>>()?;
        ("docker", layers)
    } else if let (Some(ix), Some(_)) = (find("index.json"), find("oci-layout")) {
        let blob = |digest: &str| {
            let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
            find(&format!("blobs/sha256/{hex}"))
                .ok_or_else(|| bad(format!("missing blob {digest}")))
        };
        let mut v = read_json(&plain, ix)?;
        // Follow nested indexes to the first image manifest.
        for _ in 0..4 {
            if v["layers"].is_array() {
                break;
            }
            let d = v["manifests"][0]["digest"]
                .as_str()
                .ok_or_else(|| bad("index.json: no manifests"))?
                .to_string();
            v = read_json(&plain, blob(&d)?)?;
        }
        let layers = v["layers"]
            .as_array()
            .ok_or_else(|| bad("OCI manifest: no layers"))?
            .iter()
            .map(|l| blob(l["digest"].as_str().unwrap_or_default()))
            .collect::<io::Result<_>>()?;
        ("oci", layers)
    } else {
        let size = fs::metadata(&plain)?.len();
        ("rootfs", vec![Member { offset: 0, size }])
    };
    for m in &layers {
        apply_layer(decoder(open_member(&plain, *m)?)?, rootfs, id_base)?;
    }
    Ok(Imported {
        format,
        layers: layers.len(),
    })
}

/// A member path as a clean relative path, or None for the root itself / unsafe paths.
fn clean(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(x) => out.push(x),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// Remove whatever is at `p` (without following a symbolic link).
fn remove_any(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// True when every ancestor of `rel` below `root` is a real directory (not a link).
fn parents_are_dirs(root: &Path, rel: &Path) -> bool {
    let mut p = root.to_path_buf();
    let Some(parent) = rel.parent() else {
        return true;
    };
    for c in parent.components() {
        p.push(c);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return true,
            _ => return false,
        }
    }
    true
}

fn shift(id: u64, base: u32) -> u32 {
    base + if id < 65536 { id as u32 } else { 65534 }
}

fn apply_layer(r: impl Read, root: &Path, id_base: u32) -> io::Result<()> {
    let mut ar = tar::Archive::new(r);
    ar.set_preserve_permissions(true);
    ar.set_preserve_mtime(true);
    ar.set_overwrite(true);
    ar.set_unpack_xattrs(false);
    let mut written: HashSet<PathBuf> = HashSet::new();
    for e in ar.entries()? {
        let mut e = e?;
        let Some(rel) = clean(&e.path()?) else {
            continue;
        };
        if !parents_are_dirs(root, &rel) {
            return Err(bad(format!(
                "{}: a parent is not a directory",
                rel.display()
            )));
        }
        let name = rel
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let parent = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        if name == ".wh..wh..opq" {
            for c in fs::read_dir(root.join(&parent))
                .into_iter()
                .flatten()
                .flatten()
            {
                let child = parent.join(c.file_name());
                if !written.contains(&child) {
                    remove_any(&c.path())?;
                }
            }
            continue;
        }
        if let Some(gone) = name.strip_prefix(".wh.") {
            remove_any(&root.join(&parent).join(gone))?;
            continue;
        }
        let kind = e.header().entry_type();
        if kind.is_block_special() || kind.is_character_special() || kind.is_fifo() {
            continue;
        }
        let target = root.join(&rel);
        if let Ok(m) = fs::symlink_metadata(&target) {
            if !(m.is_dir() && kind.is_dir()) {
                remove_any(&target)?;
            }
        }
        let (uid, gid) = (e.header().uid().unwrap_or(0), e.header().gid().unwrap_or(0));
        if !e.unpack_in(root)? {
            continue;
        }
        if fs::symlink_metadata(&target).is_ok() {
            nix::unistd::fchownat(
                None,
                &target,
                Some(shift(uid, id_base).into()),
                Some(shift(gid, id_base).into()),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| bad(format!("chown {}: {e}", rel.display())))?;
        }
        written.insert(rel);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_paths() {
        assert_eq!(clean(Path::new("./a/b")), Some(PathBuf::from("a/b")));
        assert_eq!(clean(Path::new("/etc/x")), Some(PathBuf::from("etc/x")));
        assert_eq!(clean(Path::new("a/../../x")), None);
        assert_eq!(clean(Path::new("./")), None);
    }

    #[test]
    fn owner_shift() {
        assert_eq!(shift(0, 1000), 1000);
        assert_eq!(shift(70000, 1000), 1000 + 65534);
    }
}
