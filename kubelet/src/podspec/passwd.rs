//! /etc/passwd and /etc/group of an image, read from its unpacked layers (topmost first), and
//! the image USER resolved the way containerd's `oci.WithUser` and `WithAdditionalGIDs` do.

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use super::PodSpecError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// The image's files, as seen through the overlay of `layers` (topmost first).
#[derive(Debug, Default)]
pub(crate) struct ImageAccounts {
    pub passwd: Option<Vec<PasswdEntry>>,
    pub group: Option<Vec<GroupEntry>>,
}

/// The content of `rel` (e.g. `etc/passwd`) in the overlay: the topmost layer that has it wins;
/// a whiteout (a 0:0 character device, or an OCI `.wh.` file if a layer kept one) hides it.
/// Symlinks are not followed: they might point out of the image.
fn overlay_read(layers: &[PathBuf], rel: &str) -> Result<Option<String>, PodSpecError> {
    let rel = Path::new(rel);
    let (parent, name) = match (rel.parent(), rel.file_name()) {
        (Some(p), Some(n)) => (p, n.to_string_lossy()),
        _ => return Ok(None),
    };
    for layer in layers {
        let path = layer.join(rel);
        if fs::symlink_metadata(layer.join(parent).join(format!(".wh.{name}"))).is_ok() {
            return Ok(None);
        }
        match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_char_device() => return Ok(None),
            Ok(m) if m.is_file() => {
                let bytes = fs::read(&path).map_err(PodSpecError::io("read", &path))?;
                return Ok(Some(String::from_utf8_lossy(&bytes).into_owned()));
            }
            Ok(_) => return Ok(None),
            Err(_) => continue,
        }
    }
    Ok(None)
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.trim().parse().ok()?,
                gid: f.get(3)?.trim().parse().ok()?,
                home: f.get(5).map(|s| s.to_string()).unwrap_or_default(),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(GroupEntry {
                name: f.first()?.to_string(),
                gid: f.get(2)?.trim().parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

impl ImageAccounts {
    pub(crate) fn load(layers: &[PathBuf]) -> Result<ImageAccounts, PodSpecError> {
        Ok(ImageAccounts {
            passwd: overlay_read(layers, "etc/passwd")?.map(|t| parse_passwd(&t)),
            group: overlay_read(layers, "etc/group")?.map(|t| parse_group(&t)),
        })
    }

    pub(crate) fn user_by_uid(&self, uid: u32) -> Option<&PasswdEntry> {
        self.passwd.as_ref()?.iter().find(|u| u.uid == uid)
    }

    fn user_by_name(&self, name: &str) -> Result<&PasswdEntry, PodSpecError> {
        self.passwd
            .as_ref()
            .and_then(|p| p.iter().find(|u| u.name == name))
            .ok_or_else(|| PodSpecError::User {
                message: format!("unable to find user {name}: no matching entries in passwd file"),
            })
    }

    fn gid_by_name(&self, name: &str) -> Result<u32, PodSpecError> {
        self.group
            .as_ref()
            .and_then(|g| g.iter().find(|x| x.name == name))
            .map(|g| g.gid)
            .ok_or_else(|| PodSpecError::User {
                message: format!("unable to find group {name}: no matching entries in group file"),
            })
    }

    /// containerd's `WithUser`: `uid`, `name`, `uid:gid`, `name:group` (any mix). A numeric uid
    /// alone takes its primary group from passwd (0 without an entry).
    pub(crate) fn resolve(&self, user: &str) -> Result<(u32, u32), PodSpecError> {
        let parts: Vec<&str> = user.split(':').collect();
        match parts.as_slice() {
            [""] => Ok((0, 0)),
            [u] => match u.parse::<u32>() {
                Ok(uid) => Ok((uid, self.user_by_uid(uid).map_or(0, |e| e.gid))),
                Err(_) => {
                    let e = self.user_by_name(u)?;
                    Ok((e.uid, e.gid))
                }
            },
            [u, g] => {
                let uid = match u.parse::<u32>() {
                    Ok(uid) => uid,
                    Err(_) => self.user_by_name(u)?.uid,
                };
                let gid = match g.parse::<u32>() {
                    Ok(gid) => gid,
                    Err(_) => self.gid_by_name(g)?,
                };
                Ok((uid, gid))
            }
            _ => Err(PodSpecError::User {
                message: format!("invalid USER value {user}"),
            }),
        }
    }

    /// Groups listing `user` (a name, or a uid looked up in passwd) as a member, other than
    /// the one named like the user (containerd's `WithAdditionalGIDs`).
    pub(crate) fn member_gids(&self, user: &str) -> Vec<u32> {
        let name = match user.parse::<u32>() {
            Ok(uid) => match self.user_by_uid(uid) {
                Some(e) => e.name.clone(),
                None => return Vec::new(),
            },
            Err(_) => user.to_string(),
        };
        self.group
            .iter()
            .flatten()
            .filter(|g| g.name != name && g.members.contains(&name))
            .map(|g| g.gid)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn layers(tmp: &Path) -> Vec<PathBuf> {
        let top = tmp.join("top");
        let bottom = tmp.join("bottom");
        fs::create_dir_all(top.join("etc")).unwrap();
        fs::create_dir_all(bottom.join("etc")).unwrap();
        fs::write(
            bottom.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nold:x:5:5::/:/bin/sh\n",
        )
        .unwrap();
        fs::write(
            top.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\n# comment\napp:x:1000:1001:App:/home/app:/bin/sh\nbroken\n",
        )
        .unwrap();
        fs::write(
            bottom.join("etc/group"),
            "root:x:0:\napp:x:1001:\nwheel:x:10:app,other\naudio:x:29:app\nvideo:x:44:root\n",
        )
        .unwrap();
        vec![top, bottom]
    }

    #[test]
    fn topmost_layer_wins_and_resolution() {
        let tmp = tempfile::tempdir().unwrap();
        let a = ImageAccounts::load(&layers(tmp.path())).unwrap();
        assert!(
            a.user_by_uid(5).is_none(),
            "the top layer's passwd hides the bottom one"
        );
        assert_eq!(a.resolve("").unwrap(), (0, 0));
        assert_eq!(a.resolve("app").unwrap(), (1000, 1001));
        assert_eq!(a.resolve("1000").unwrap(), (1000, 1001));
        assert_eq!(a.resolve("4242").unwrap(), (4242, 0));
        assert_eq!(a.resolve("app:wheel").unwrap(), (1000, 10));
        assert_eq!(a.resolve("7:8").unwrap(), (7, 8));
        assert_eq!(
            a.resolve("nobody").unwrap_err().to_string(),
            "unable to find user nobody: no matching entries in passwd file"
        );
        assert_eq!(
            a.resolve("0:staff").unwrap_err().to_string(),
            "unable to find group staff: no matching entries in group file"
        );
        assert_eq!(a.member_gids("app"), vec![10, 29]);
        assert_eq!(a.member_gids("1000"), vec![10, 29]);
        assert_eq!(a.member_gids("0"), vec![44]);
        assert!(a.member_gids("4242").is_empty());
    }

    #[test]
    fn whiteouts_hide_files() {
        let tmp = tempfile::tempdir().unwrap();
        let mut l = layers(tmp.path());
        let wh = tmp.path().join("wh");
        fs::create_dir_all(wh.join("etc")).unwrap();
        fs::write(wh.join("etc/.wh.group"), "").unwrap();
        l.insert(0, wh);
        let a = ImageAccounts::load(&l).unwrap();
        assert!(a.group.is_none());
        assert!(a.passwd.is_some());
    }
}
