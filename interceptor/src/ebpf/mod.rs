//! Loading, attaching and pinning the kernel programs, and typed access to their maps.
//!
//! Everything is pinned under the pin directory, so the steering outlives the daemon: a stopped
//! or crashed daemon leaves the program attached and failing closed, and the next daemon takes
//! the maps over and swaps in its own program without a moment where protected flows could
//! pass unchecked.

mod bpffs;
pub mod events;
pub mod exempt;

use std::{
    collections::HashSet,
    fs::File,
    io,
    net::SocketAddr,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use aya::{
    maps::{Array, HashMap, MapData, MapError, PerCpuArray, RingBuf, SockMap},
    programs::{links::FdLink, links::PinnedLink, SkLookup},
    Ebpf, EbpfLoader,
};
use interceptor_common::{
    counter, names, DestKey, FLAG_FAIL_OPEN, LISTENER_V4, LISTENER_V6, SETTINGS_FLAGS,
};
use thiserror::Error;

use crate::addr::dest_key;
pub use exempt::{ExemptRegistry, Exemption};

/// Where the kernel object is looked for when the config names none.
const OBJECT_NAME: &str = "interceptor-ebpf.o";
const SYSTEM_OBJECT_DIR: &str = "/usr/lib/interceptor";

#[derive(Debug, Error)]
pub enum SteeringError {
    #[error("pin directory {path}: {source}")]
    PinDir { path: PathBuf, source: io::Error },
    #[error("kernel object not found (looked at: {0}); run `cargo xtask build` or set bpf_object")]
    ObjectMissing(String),
    #[error("loading {path}: {source}")]
    Load {
        path: PathBuf,
        source: Box<aya::EbpfError>,
    },
    #[error("kernel object has no {0}")]
    Missing(&'static str),
    #[error("steering program: {0}")]
    Program(#[from] aya::programs::ProgramError),
    #[error("pinning the steering link at {path}: {message}")]
    Pin { path: PathBuf, message: String },
    #[error("{0}: {1}")]
    Map(&'static str, MapError),
    #[error("opening this network namespace: {0}")]
    Netns(io::Error),
}

/// Counts kept by the steering program since its maps were created.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub steered: u64,
    pub dropped_no_listener: u64,
    pub passed_fail_open: u64,
    pub exempt_passed: u64,
    pub assign_failed: u64,
    pub events_lost: u64,
}

/// The attached steering program and its maps.
pub struct Steering {
    pin_dir: PathBuf,
    protected: HashMap<MapData, DestKey, u8>,
    listeners: SockMap<MapData>,
    counters: PerCpuArray<MapData, u64>,
    exempt: ExemptRegistry,
    events: Option<RingBuf<MapData>>,
    // Keeps the link's fd for the daemon's lifetime; the pin keeps it attached beyond.
    _link: PinnedLink,
    _ebpf: Ebpf,
}

impl Steering {
    /// Loads the kernel object, reuses (or creates) the pinned maps, and attaches the steering
    /// program to this network namespace, replacing a program a previous daemon attached.
    /// Stale exemptions are cleared; no listener is set yet, so protected flows are dropped
    /// (or passed, with `fail_open`) until [`Steering::set_listener`].
    pub fn attach(
        pin_dir: &Path,
        object: Option<&Path>,
        fail_open: bool,
    ) -> Result<Self, SteeringError> {
        bpffs::prepare_pin_dir(pin_dir)?;
        let object = find_object(object)?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(pin_dir)
            .load_file(&object)
            .map_err(|source| SteeringError::Load {
                path: object.clone(),
                source: Box::new(source),
            })?;

        let mut settings: Array<MapData, u32> = take_map(&mut ebpf, names::SETTINGS)?;
        let flags = if fail_open { FLAG_FAIL_OPEN } else { 0 };
        settings
            .set(SETTINGS_FLAGS, flags, 0)
            .map_err(|e| SteeringError::Map("SETTINGS set", e))?;
        let exempt = ExemptRegistry::new(take_map(&mut ebpf, names::EXEMPT)?);
        let stale = exempt.clear()?;
        if stale > 0 {
            tracing::info!("cleared {stale} exemptions left by a previous daemon");
        }

        let link = attach_program(&mut ebpf, pin_dir)?;
        Ok(Self {
            pin_dir: pin_dir.to_owned(),
            protected: take_map(&mut ebpf, names::PROTECTED)?,
            listeners: take_map(&mut ebpf, names::LISTENERS)?,
            counters: take_map(&mut ebpf, names::COUNTERS)?,
            events: Some(take_map(&mut ebpf, names::EVENTS)?),
            exempt,
            _link: link,
            _ebpf: ebpf,
        })
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Makes the protected set exactly `addrs`.
    pub fn set_protected(&mut self, addrs: &[SocketAddr]) -> Result<(), SteeringError> {
        let wanted: HashSet<DestKey> = addrs.iter().map(|a| dest_key(*a)).collect();
        let present: Vec<DestKey> = self.protected.keys().filter_map(Result::ok).collect();
        for key in present.iter().filter(|k| !wanted.contains(k)) {
            self.protected
                .remove(key)
                .map_err(|e| SteeringError::Map("PROTECTED remove", e))?;
        }
        for key in wanted {
            self.protected
                .insert(key, 1, 0)
                .map_err(|e| SteeringError::Map("PROTECTED insert", e))?;
        }
        Ok(())
    }

    /// Puts the daemon's listening socket for one family in the socket map. The kernel removes
    /// it by itself when the socket closes, which is what makes a dead daemon fail closed.
    pub fn set_listener<S: AsRawFd>(
        &mut self,
        ipv6: bool,
        socket: &S,
    ) -> Result<(), SteeringError> {
        let slot = if ipv6 { LISTENER_V6 } else { LISTENER_V4 };
        self.listeners
            .set(slot, socket, 0)
            .map_err(|e| SteeringError::Map("LISTENERS set", e))
    }

    pub fn exempt(&self) -> ExemptRegistry {
        self.exempt.clone()
    }

    /// The ring buffer of kernel events; there is one reader, so this gives it away once.
    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.events.take()
    }

    pub fn counters(&self) -> Result<Counters, SteeringError> {
        let read = |index: u32| -> Result<u64, SteeringError> {
            let values = self
                .counters
                .get(&index, 0)
                .map_err(|e| SteeringError::Map("COUNTERS get", e))?;
            Ok(values.iter().sum())
        };
        Ok(Counters {
            steered: read(counter::STEERED)?,
            dropped_no_listener: read(counter::DROPPED_NO_LISTENER)?,
            passed_fail_open: read(counter::PASSED_FAIL_OPEN)?,
            exempt_passed: read(counter::EXEMPT_PASSED)?,
            assign_failed: read(counter::ASSIGN_FAILED)?,
            events_lost: read(counter::EVENTS_LOST)?,
        })
    }
}

fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, SteeringError>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf.take_map(name).ok_or(SteeringError::Missing(name))?;
    T::try_from(map).map_err(|e| SteeringError::Map(name, e))
}

/// Attaches the program, pins the new link, then unpins the previous daemon's link (which
/// detaches it). Both run for an instant, with the same maps and the same logic, so there is
/// no gap in which a protected flow is not steered.
fn attach_program(ebpf: &mut Ebpf, pin_dir: &Path) -> Result<PinnedLink, SteeringError> {
    let program: &mut SkLookup = ebpf
        .program_mut(names::STEER_PROGRAM)
        .ok_or(SteeringError::Missing("steer program"))?
        .try_into()?;
    program.load()?;
    let netns = File::open("/proc/self/ns/net").map_err(SteeringError::Netns)?;
    let link_id = program.attach(&netns)?;
    let link: FdLink = program.take_link(link_id)?.into();

    let current = pin_dir.join(names::STEER_LINK);
    // bpffs refuses names with a dot in them.
    let incoming = pin_dir.join(format!("{}_incoming", names::STEER_LINK));
    let pin_error = |path: &Path, message: String| SteeringError::Pin {
        path: path.to_owned(),
        message,
    };
    remove_if_present(&incoming).map_err(|e| pin_error(&incoming, e.to_string()))?;
    let pinned = link
        .pin(&incoming)
        .map_err(|e| pin_error(&incoming, e.to_string()))?;
    if current.exists() {
        let previous =
            PinnedLink::from_pin(&current).map_err(|e| pin_error(&current, e.to_string()))?;
        // Unpinning drops the last reference to the previous link: it detaches.
        previous
            .unpin()
            .map_err(|e| pin_error(&current, e.to_string()))?;
        tracing::info!("took over steering from a previous daemon");
    }
    std::fs::rename(&incoming, &current).map_err(|e| pin_error(&current, e.to_string()))?;
    // The PinnedLink still names the temporary path, but only its fd matters from here on.
    Ok(pinned)
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn find_object(configured: Option<&Path>) -> Result<PathBuf, SteeringError> {
    let mut candidates = Vec::new();
    if let Some(path) = configured {
        candidates.push(path.to_owned());
    } else {
        if let Ok(exe) = std::env::current_exe() {
            if let Some(dir) = exe.parent() {
                candidates.push(dir.join(OBJECT_NAME));
            }
        }
        candidates.push(Path::new(SYSTEM_OBJECT_DIR).join(OBJECT_NAME));
    }
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            SteeringError::ObjectMissing(
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        })
}

/// Removes the steering on purpose: the link pin (which detaches the program once no daemon
/// holds it) and every map pin. Protected flows then reach the broker directly.
pub fn detach(pin_dir: &Path) -> Result<Vec<PathBuf>, SteeringError> {
    let fs_error = |source: io::Error| SteeringError::PinDir {
        path: pin_dir.to_owned(),
        source,
    };
    let mut removed = Vec::new();
    let entries = match std::fs::read_dir(pin_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(fs_error(e)),
    };
    // The link first, so nothing steers into maps that are about to go.
    let mut paths: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    paths.sort_by_key(|p| !p.to_string_lossy().contains(names::STEER_LINK));
    for path in paths {
        std::fs::remove_file(&path).map_err(fs_error)?;
        removed.push(path);
    }
    std::fs::remove_dir(pin_dir).map_err(fs_error)?;
    Ok(removed)
}
