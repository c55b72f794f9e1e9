//! The only code in the project that touches configfs: mkdir, attribute write, symlink,
//! unlink, rmdir and read under one root, either the kernel's `/sys/kernel/config` or a
//! plain directory that simulates it for tests.
//!
//! The simulation keeps the few configfs rules the provisioner relies on, so that an
//! ordering bug shows up in a temp-dir test and not first on a real kernel:
//! - directories the kernel creates by itself (`attrib/`, `param/`, …, and `target/core`)
//!   appear on demand: a write or mkdir creates missing parents;
//! - `mkdir` of an existing directory fails with EEXIST;
//! - `rmdir` removes attribute files and those implicit directories with it, but fails
//!   with ENOTEMPTY while a symlink or a directory made by an explicit `mkdir` is inside.
//!
//! - injected failures ([`Faults`]): a test makes chosen operations fail with an errno,
//!   as the kernel does (EBUSY, ENOTEMPTY, EINVAL), to drive rollback and retry.
//!
//! Not its job: deciding what to create (see `plan`), or ordering and rollback (see
//! `configfs`).

use std::collections::HashSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::ProvisionError;
use crate::platform::Platform;

/// Whether the root is the kernel's configfs or a simulation of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    Kernel,
    Simulated,
}

/// Failures to inject into a simulated tree. Clones share one list, so a test keeps a
/// handle while the provisioner owns the tree. The kernel's tree ignores them.
#[derive(Debug, Clone, Default)]
pub struct Faults(Arc<Mutex<Vec<Fault>>>);

#[derive(Debug, Clone)]
struct Fault {
    verb: &'static str,
    path_end: String,
    errno: i32,
    /// Matching calls to let through before it fires.
    skip: u32,
    /// How many more times it fires; `None`: until cleared.
    times: Option<u32>,
}

impl Faults {
    /// Makes `verb` (`mkdir`, `write`, `symlink`, `unlink` or `rmdir`) on a path ending
    /// in `path_end` fail with `errno`, the next `times` times (`None`: until cleared).
    pub fn fail(&self, verb: &'static str, path_end: &str, errno: i32, times: Option<u32>) {
        self.fail_after(verb, path_end, errno, 0, times);
    }

    /// Like [`Faults::fail`], but the first `skip` matching calls succeed (to fail,
    /// say, the restore of a value whose first write went through).
    pub fn fail_after(
        &self,
        verb: &'static str,
        path_end: &str,
        errno: i32,
        skip: u32,
        times: Option<u32>,
    ) {
        self.list().push(Fault {
            verb,
            path_end: path_end.to_string(),
            errno,
            skip,
            times,
        });
    }

    /// Removes every injected failure.
    pub fn clear(&self) {
        self.list().clear();
    }

    fn list(&self) -> std::sync::MutexGuard<'_, Vec<Fault>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The errno `verb` on `rel` must fail with, if a fault matches (and uses it up).
    fn hit(&self, verb: &str, rel: &str) -> Option<i32> {
        let mut list = self.list();
        let i = list
            .iter()
            .position(|f| f.verb == verb && rel.ends_with(&f.path_end))?;
        if list[i].skip > 0 {
            list[i].skip -= 1;
            return None;
        }
        let errno = list[i].errno;
        match &mut list[i].times {
            Some(1) => {
                list.remove(i);
            }
            Some(n) => *n -= 1,
            None => {}
        }
        Some(errno)
    }
}

/// A configfs tree. Paths given to its methods are relative to the root (e.g.
/// `target/core/user_1/ietd_t1_l0/enable`); errors name the full path.
#[derive(Debug)]
pub struct ConfigFs {
    root: PathBuf,
    kind: FsKind,
    /// Simulation only: directories made by `mkdir` (as opposed to implicit ones).
    explicit: Mutex<HashSet<PathBuf>>,
    faults: Faults,
}

fn io_err(verb: &str, path: &Path, source: io::Error) -> ProvisionError {
    ProvisionError::Io {
        path: format!("{verb} {}", path.display()),
        source,
    }
}

impl ConfigFs {
    /// Opens `root` as [`Platform::for_root`] decides. A root that does not exist is an
    /// error.
    pub fn open(root: impl Into<PathBuf>) -> Result<ConfigFs, ProvisionError> {
        Platform::for_root(root).configfs()
    }

    /// A tree of an explicitly chosen kind.
    pub fn with_kind(root: impl Into<PathBuf>, kind: FsKind) -> ConfigFs {
        ConfigFs {
            root: root.into(),
            kind,
            explicit: Mutex::new(HashSet::new()),
            faults: Faults::default(),
        }
    }

    /// The injected-failure list of this tree (used only when it is simulated).
    pub fn faults(&self) -> Faults {
        self.faults.clone()
    }

    /// Fails like the kernel would if a test injected a fault for `verb` on `rel`.
    fn injected(&self, verb: &'static str, rel: &str) -> Result<(), ProvisionError> {
        if self.kind != FsKind::Simulated {
            return Ok(());
        }
        match self.faults.hit(verb, rel) {
            Some(errno) => Err(io_err(
                verb,
                &self.abs(rel),
                io::Error::from_raw_os_error(errno),
            )),
            None => Ok(()),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn kind(&self) -> FsKind {
        self.kind
    }

    /// The absolute path of `rel`.
    pub fn abs(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    pub fn exists(&self, rel: &str) -> bool {
        fs::symlink_metadata(self.abs(rel)).is_ok()
    }

    pub fn mkdir(&self, rel: &str) -> Result<(), ProvisionError> {
        self.injected("mkdir", rel)?;
        let path = self.abs(rel);
        if self.kind == FsKind::Simulated {
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).map_err(|e| io_err("mkdir", parent, e))?;
            }
        }
        fs::create_dir(&path).map_err(|e| io_err("mkdir", &path, e))?;
        if self.kind == FsKind::Simulated {
            self.explicit_set().insert(path);
        }
        Ok(())
    }

    /// Writes `value` exactly, in one `write(2)`, without a trailing newline (several LIO
    /// stores keep a newline verbatim). The kernel's configfs never creates files, so a
    /// missing attribute is ENOENT there.
    pub fn write(&self, rel: &str, value: &str) -> Result<(), ProvisionError> {
        self.injected("write", rel)?;
        let path = self.abs(rel);
        let mut file = match self.kind {
            FsKind::Kernel => fs::OpenOptions::new().write(true).open(&path),
            FsKind::Simulated => {
                if let Some(parent) = path.parent() {
                    fs::create_dir_all(parent).map_err(|e| io_err("write", parent, e))?;
                }
                fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&path)
            }
        }
        .map_err(|e| io_err("write", &path, e))?;
        // configfs hands each write(2) to the attribute's store function, so the whole
        // value must go in one call; a short write would store a truncated value.
        let n = file
            .write(value.as_bytes())
            .map_err(|e| io_err("write", &path, e))?;
        if n != value.len() {
            return Err(io_err(
                "write",
                &path,
                io::Error::new(io::ErrorKind::WriteZero, "short write"),
            ));
        }
        Ok(())
    }

    /// Reads an attribute.
    pub fn read(&self, rel: &str) -> Result<String, ProvisionError> {
        let path = self.abs(rel);
        fs::read_to_string(&path).map_err(|e| io_err("read", &path, e))
    }

    /// Creates `link` pointing at `target` (both relative to the root). configfs resolves
    /// the target from the caller's working directory, so the link gets an absolute path.
    pub fn symlink(&self, link: &str, target: &str) -> Result<(), ProvisionError> {
        self.injected("symlink", link)?;
        let lpath = self.abs(link);
        let tpath = self.abs(target);
        std::os::unix::fs::symlink(&tpath, &lpath).map_err(|e| io_err("symlink", &lpath, e))
    }

    pub fn unlink(&self, rel: &str) -> Result<(), ProvisionError> {
        self.injected("unlink", rel)?;
        let path = self.abs(rel);
        fs::remove_file(&path).map_err(|e| io_err("unlink", &path, e))
    }

    pub fn rmdir(&self, rel: &str) -> Result<(), ProvisionError> {
        self.injected("rmdir", rel)?;
        let path = self.abs(rel);
        if self.kind == FsKind::Simulated {
            self.sim_clear(&path, true)
                .map_err(|e| io_err("rmdir", &path, e))?;
            self.explicit_set().remove(&path);
        }
        fs::remove_dir(&path).map_err(|e| io_err("rmdir", &path, e))
    }

    /// Names of the entries of a directory, sorted; a missing directory, or an attribute
    /// file where a directory was expected (`target/iscsi/lio_version`), is empty.
    pub fn list(&self, rel: &str) -> Result<Vec<String>, ProvisionError> {
        let path = self.abs(rel);
        let rd = match fs::read_dir(&path) {
            Ok(rd) => rd,
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::ENOTDIR) =>
            {
                return Ok(Vec::new())
            }
            Err(e) => return Err(io_err("list", &path, e)),
        };
        let mut names = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| io_err("list", &path, e))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    /// Where a symlink points, relative to the root when it points inside it. The
    /// kernel's configfs answers with a path relative to the link's directory
    /// (`../../../../core/user_0/x`); that is resolved lexically.
    pub fn read_link(&self, rel: &str) -> Result<String, ProvisionError> {
        let path = self.abs(rel);
        let target = fs::read_link(&path).map_err(|e| io_err("readlink", &path, e))?;
        let full = if target.is_absolute() {
            target
        } else {
            let mut out = path.parent().map(Path::to_path_buf).unwrap_or_default();
            for c in target.components() {
                match c {
                    std::path::Component::ParentDir => {
                        out.pop();
                    }
                    std::path::Component::CurDir => {}
                    other => out.push(other),
                }
            }
            out
        };
        Ok(match full.strip_prefix(&self.root) {
            Ok(r) => r.to_string_lossy().into_owned(),
            Err(_) => full.to_string_lossy().into_owned(),
        })
    }

    fn explicit_set(&self) -> std::sync::MutexGuard<'_, HashSet<PathBuf>> {
        // A poisoned lock only means another thread panicked while holding it; the set
        // is still a valid set.
        self.explicit.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Simulated rmdir: empties `dir` of what configfs would drop with it (attribute
    /// files, implicit groups), refusing like the kernel if user-made objects remain.
    fn sim_clear(&self, dir: &Path, top: bool) -> io::Result<()> {
        if !top && self.explicit_set().contains(dir) {
            return Err(io::Error::from_raw_os_error(libc::ENOTEMPTY));
        }
        // First check, then delete, so a refused rmdir leaves the tree untouched.
        self.sim_check(dir, top)?;
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let ft = entry.file_type()?;
            if ft.is_dir() {
                self.sim_clear(&entry.path(), false)?;
                fs::remove_dir(entry.path())?;
            } else {
                fs::remove_file(entry.path())?;
            }
        }
        Ok(())
    }

    fn sim_check(&self, dir: &Path, top: bool) -> io::Result<()> {
        if !top && self.explicit_set().contains(dir) {
            return Err(io::Error::from_raw_os_error(libc::ENOTEMPTY));
        }
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let ft = entry.file_type()?;
            if ft.is_symlink() {
                return Err(io::Error::from_raw_os_error(libc::ENOTEMPTY));
            }
            if ft.is_dir() {
                self.sim_check(&entry.path(), false)?;
            }
        }
        Ok(())
    }
}
