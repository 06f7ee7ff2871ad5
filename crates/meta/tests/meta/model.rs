//! Random namespace operations applied to the store and to a plain
//! in-memory model: after every operation, and after checkpoints and
//! reopening, every listing, attribute and target agrees.

use std::collections::BTreeMap;

use atrest_core::ContentAlgorithm;
use atrest_meta::record::{ObjectKind, ROOT_ID};
use atrest_meta::{FsError, NewObject, RenameMode, SetAttr, Store};
use proptest::prelude::*;

use crate::common::{at, new_store, reopen};

#[derive(Debug, Clone)]
enum Node {
    Dir {
        entries: BTreeMap<Vec<u8>, u64>,
        parent: u64,
    },
    File {
        nlink: u32,
    },
    Symlink {
        target: Vec<u8>,
    },
}

#[derive(Debug, Clone)]
struct Model {
    nodes: BTreeMap<u64, (Node, u16)>,
    next_id: u64,
}

/// What an operation returned, compared between store and model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    NotFound,
    Exists,
    NotDir,
    IsDir,
    NotEmpty,
    Invalid,
    NotPermitted,
}

fn outcome(result: Result<(), FsError>) -> Outcome {
    match result {
        Ok(()) => Outcome::Ok,
        Err(FsError::NotFound) => Outcome::NotFound,
        Err(FsError::Exists) => Outcome::Exists,
        Err(FsError::NotDir) => Outcome::NotDir,
        Err(FsError::IsDir) => Outcome::IsDir,
        Err(FsError::NotEmpty) => Outcome::NotEmpty,
        Err(FsError::Invalid(_)) => Outcome::Invalid,
        Err(FsError::NotPermitted(_)) => Outcome::NotPermitted,
        Err(e) => panic!("store failed: {e}"),
    }
}

#[derive(Debug, Clone)]
enum Op {
    Create {
        dir: usize,
        name: Vec<u8>,
        kind: u8,
    },
    Symlink {
        dir: usize,
        name: Vec<u8>,
        long: bool,
    },
    Link {
        object: usize,
        dir: usize,
        name: Vec<u8>,
    },
    Unlink {
        dir: usize,
        name: Vec<u8>,
    },
    Rmdir {
        dir: usize,
        name: Vec<u8>,
    },
    Rename {
        from: usize,
        from_name: Vec<u8>,
        to: usize,
        to_name: Vec<u8>,
        mode: u8,
    },
    Chmod {
        object: usize,
        mode: u16,
    },
    Checkpoint,
    Reopen,
    Sync,
    /// Reopen without a checkpoint: recovery replays the log.
    Replay,
}

fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::sample::select(vec!["a", "b", "c", "dd", "e.txt"]).prop_map(|s| s.as_bytes().to_vec()),
        1 => (1usize..=255).prop_map(|n| vec![b'x'; n]),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let idx = || 0usize..64;
    prop_oneof![
        6 => (idx(), name(), 0u8..3).prop_map(|(dir, name, kind)| Op::Create { dir, name, kind }),
        1 => (idx(), name(), any::<bool>()).prop_map(|(dir, name, long)| Op::Symlink { dir, name, long }),
        1 => (idx(), idx(), name()).prop_map(|(object, dir, name)| Op::Link { object, dir, name }),
        2 => (idx(), name()).prop_map(|(dir, name)| Op::Unlink { dir, name }),
        1 => (idx(), name()).prop_map(|(dir, name)| Op::Rmdir { dir, name }),
        2 => (idx(), name(), idx(), name(), 0u8..3)
            .prop_map(|(from, from_name, to, to_name, mode)| Op::Rename { from, from_name, to, to_name, mode }),
        1 => (idx(), 0u16..0o7777).prop_map(|(object, mode)| Op::Chmod { object, mode }),
        1 => Just(Op::Checkpoint),
        1 => Just(Op::Reopen),
        1 => Just(Op::Sync),
        1 => Just(Op::Replay),
    ]
}

impl Model {
    fn new() -> Self {
        let mut nodes = BTreeMap::new();
        nodes.insert(
            ROOT_ID,
            (
                Node::Dir {
                    entries: BTreeMap::new(),
                    parent: ROOT_ID,
                },
                0o755,
            ),
        );
        Self { nodes, next_id: 2 }
    }

    fn dirs(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|(_, (n, _))| matches!(n, Node::Dir { .. }))
            .map(|(id, _)| *id)
            .collect()
    }

    fn pick_dir(&self, i: usize) -> u64 {
        let dirs = self.dirs();
        dirs[i % dirs.len()]
    }

    fn pick_object(&self, i: usize) -> u64 {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        ids[i % ids.len()]
    }

    fn entries(&mut self, dir: u64) -> &mut BTreeMap<Vec<u8>, u64> {
        match &mut self.nodes.get_mut(&dir).expect("live").0 {
            Node::Dir { entries, .. } => entries,
            _ => unreachable!("picked directories only"),
        }
    }

    fn is_dir(&self, id: u64) -> bool {
        matches!(self.nodes[&id].0, Node::Dir { .. })
    }

    fn is_empty_dir(&self, id: u64) -> bool {
        matches!(&self.nodes[&id].0, Node::Dir { entries, .. } if entries.is_empty())
    }

    fn is_ancestor(&self, ancestor: u64, mut id: u64) -> bool {
        loop {
            if id == ancestor {
                return true;
            }
            if id == ROOT_ID {
                return false;
            }
            let Node::Dir { parent, .. } = &self.nodes[&id].0 else {
                unreachable!()
            };
            id = *parent;
        }
    }

    fn drop_name(&mut self, id: u64) {
        match &mut self.nodes.get_mut(&id).expect("live").0 {
            Node::File { nlink } if *nlink > 1 => *nlink -= 1,
            _ => {
                self.nodes.remove(&id);
            }
        }
    }

    fn create(&mut self, dir: u64, name: &[u8], node: Node) -> Outcome {
        if self.entries(dir).contains_key(name) {
            return Outcome::Exists;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.entries(dir).insert(name.to_vec(), id);
        self.nodes.insert(id, (node, 0o644));
        Outcome::Ok
    }

    fn rename(
        &mut self,
        from: u64,
        from_name: &[u8],
        to: u64,
        to_name: &[u8],
        mode: RenameMode,
    ) -> Outcome {
        let Some(&source) = self.entries(from).get(from_name) else {
            return Outcome::NotFound;
        };
        let target = self.entries(to).get(to_name).copied();
        if self.is_dir(source) && self.is_ancestor(source, to) {
            return Outcome::Invalid;
        }
        match (mode, target) {
            (RenameMode::NoReplace, Some(_)) => return Outcome::Exists,
            (RenameMode::Exchange, None) => return Outcome::NotFound,
            (RenameMode::Exchange, Some(target)) => {
                if self.is_dir(target) && self.is_ancestor(target, from) {
                    return Outcome::Invalid;
                }
                if target == source {
                    return Outcome::Ok;
                }
                self.entries(from).insert(from_name.to_vec(), target);
                self.entries(to).insert(to_name.to_vec(), source);
                self.set_parent(source, to);
                self.set_parent(target, from);
                return Outcome::Ok;
            }
            _ => {}
        }
        if let Some(target) = target {
            if target == source {
                return Outcome::Ok;
            }
            match (self.is_dir(source), self.is_dir(target)) {
                (true, false) => return Outcome::NotDir,
                (false, true) => return Outcome::IsDir,
                (true, true) if !self.is_empty_dir(target) => return Outcome::NotEmpty,
                _ => {}
            }
            self.entries(to).remove(to_name);
            self.drop_name(target);
        }
        self.entries(from).remove(from_name);
        self.entries(to).insert(to_name.to_vec(), source);
        self.set_parent(source, to);
        Outcome::Ok
    }

    fn set_parent(&mut self, id: u64, new_parent: u64) {
        if let Node::Dir { parent, .. } = &mut self.nodes.get_mut(&id).expect("live").0 {
            *parent = new_parent;
        }
    }
}

fn apply(store: &mut Store, model: &mut Model, op: &Op, t: i64) -> Outcome {
    let now = at(t);
    match op {
        Op::Create { dir, name, kind } => {
            let dir = model.pick_dir(*dir);
            let kind =
                [ObjectKind::Regular, ObjectKind::Directory, ObjectKind::Fifo][usize::from(*kind)];
            let new = NewObject {
                kind,
                mode: 0o644,
                uid: 1,
                gid: 2,
                rdev: 0,
                target: Vec::new(),
            };
            let got = outcome(store.create(dir, name, new, now).map(drop));
            let node = match kind {
                ObjectKind::Directory => Node::Dir {
                    entries: BTreeMap::new(),
                    parent: dir,
                },
                _ => Node::File { nlink: 1 },
            };
            assert_eq!(got, model.create(dir, name, node), "{op:?}");
            got
        }
        Op::Symlink { dir, name, long } => {
            let dir = model.pick_dir(*dir);
            let target = if *long {
                vec![b't'; 4095]
            } else {
                b"../x".to_vec()
            };
            let new = NewObject {
                kind: ObjectKind::Symlink,
                mode: 0o644,
                uid: 0,
                gid: 0,
                rdev: 0,
                target: target.clone(),
            };
            let got = outcome(store.create(dir, name, new, now).map(drop));
            assert_eq!(
                got,
                model.create(dir, name, Node::Symlink { target }),
                "{op:?}"
            );
            got
        }
        Op::Link { object, dir, name } => {
            let (id, dir) = (model.pick_object(*object), model.pick_dir(*dir));
            let got = outcome(store.link(id, dir, name, now).map(drop));
            let want = if model.is_dir(id) {
                Outcome::NotPermitted
            } else if model.entries(dir).contains_key(name.as_slice()) {
                Outcome::Exists
            } else {
                model.entries(dir).insert(name.clone(), id);
                if let Node::File { nlink } = &mut model.nodes.get_mut(&id).expect("live").0 {
                    *nlink += 1;
                } else if let Node::Symlink { .. } = model.nodes[&id].0 {
                    // Symlinks get links too: model them as files from
                    // now on would lose the target; keep a count aside.
                    unreachable!("filtered below");
                }
                Outcome::Ok
            };
            assert_eq!(got, want, "{op:?}");
            got
        }
        Op::Unlink { dir, name } => {
            let dir = model.pick_dir(*dir);
            let got = outcome(store.unlink(dir, name, now).map(drop));
            let want = match model.entries(dir).get(name.as_slice()).copied() {
                None => Outcome::NotFound,
                Some(id) if model.is_dir(id) => Outcome::IsDir,
                Some(id) => {
                    model.entries(dir).remove(name.as_slice());
                    model.drop_name(id);
                    Outcome::Ok
                }
            };
            assert_eq!(got, want, "{op:?}");
            got
        }
        Op::Rmdir { dir, name } => {
            let dir = model.pick_dir(*dir);
            let got = outcome(store.rmdir(dir, name, now).map(drop));
            let want = match model.entries(dir).get(name.as_slice()).copied() {
                None => Outcome::NotFound,
                Some(id) if !model.is_dir(id) => Outcome::NotDir,
                Some(id) if !model.is_empty_dir(id) => Outcome::NotEmpty,
                Some(id) => {
                    model.entries(dir).remove(name.as_slice());
                    model.nodes.remove(&id);
                    Outcome::Ok
                }
            };
            assert_eq!(got, want, "{op:?}");
            got
        }
        Op::Rename {
            from,
            from_name,
            to,
            to_name,
            mode,
        } => {
            let (from, to) = (model.pick_dir(*from), model.pick_dir(*to));
            let mode = [
                RenameMode::Replace,
                RenameMode::NoReplace,
                RenameMode::Exchange,
            ][usize::from(*mode)];
            let got = outcome(store.rename(from, from_name, to, to_name, mode, now));
            assert_eq!(
                got,
                model.rename(from, from_name, to, to_name, mode),
                "{op:?}"
            );
            got
        }
        Op::Chmod { object, mode } => {
            let id = model.pick_object(*object);
            let change = SetAttr {
                mode: Some(*mode),
                ..SetAttr::default()
            };
            let got = outcome(store.setattr(id, &change, now).map(drop));
            model.nodes.get_mut(&id).expect("live").1 = *mode;
            got
        }
        Op::Checkpoint | Op::Reopen | Op::Sync | Op::Replay => {
            unreachable!("handled by the runner")
        }
    }
}

/// Walks the store from the root and compares every object with the model.
fn check(store: &mut Store, model: &Model) {
    let mut seen = BTreeMap::new();
    let mut stack = vec![ROOT_ID];
    while let Some(dir) = stack.pop() {
        let mut entries = BTreeMap::new();
        let mut after = 0;
        loop {
            let batch = store.readdir(dir, after, 7).unwrap();
            let Some(last) = batch.last() else { break };
            after = last.hash;
            for e in batch {
                assert!(
                    entries.insert(e.name.clone(), e.id).is_none(),
                    "{:?} listed twice",
                    e.name
                );
            }
        }
        let (
            Node::Dir {
                entries: want,
                parent,
            },
            _,
        ) = &model.nodes[&dir]
        else {
            unreachable!()
        };
        assert_eq!(&entries, want, "entries of directory {dir}");
        let head = store.getattr(dir).unwrap();
        assert_eq!(head.parent, *parent, "parent of {dir}");
        assert_eq!(head.size, want.len() as u64, "size of {dir}");
        let subdirs = want.values().filter(|id| model.is_dir(**id)).count() as u32;
        assert_eq!(head.nlink, 2 + subdirs, "nlink of {dir}");
        for (name, id) in want {
            let by_lookup = store.lookup(dir, name).unwrap();
            assert_eq!(by_lookup.id, *id);
            *seen.entry(*id).or_insert(0u32) += 1;
            if model.is_dir(*id) {
                stack.push(*id);
            }
        }
    }
    for (id, (node, mode)) in &model.nodes {
        let head = store.getattr(*id).unwrap();
        assert_eq!(head.mode, *mode, "mode of {id}");
        match node {
            Node::File { nlink } => assert_eq!(head.nlink, *nlink, "nlink of {id}"),
            Node::Symlink { target } => assert_eq!(&store.readlink(*id).unwrap(), target),
            Node::Dir { .. } => {}
        }
        if *id != ROOT_ID {
            assert!(seen.contains_key(id), "object {id} has no name");
        }
    }
}

fn run(algorithm: ContentAlgorithm, ops: &[Op]) {
    let (mut store, backing) = new_store(algorithm);
    let mut model = Model::new();
    for (t, op) in ops.iter().enumerate() {
        let t = 10 + t as i64;
        match op {
            Op::Checkpoint => {
                store.checkpoint(at(t)).unwrap();
            }
            Op::Reopen => {
                store.checkpoint(at(t)).unwrap();
                store = reopen(&backing, algorithm);
            }
            Op::Sync => store.sync().unwrap(),
            Op::Replay => {
                // The in-memory backing loses nothing: every operation
                // comes back from the log.
                drop(store);
                store = reopen(&backing, algorithm);
                check(&mut store, &model);
            }
            // Hard links of symlinks are legal but the model keeps
            // symlinks single-named.
            Op::Link { object, .. }
                if matches!(
                    model.nodes[&model.pick_object(*object)].0,
                    Node::Symlink { .. }
                ) =>
            {
                continue;
            }
            op => {
                apply(&mut store, &mut model, op, t);
            }
        }
    }
    check(&mut store, &model);
    drop(store);
    let mut replayed = reopen(&backing, algorithm);
    check(&mut replayed, &model);
    replayed.checkpoint(at(1_000_000)).unwrap();
    let mut reopened = reopen(&backing, algorithm);
    check(&mut reopened, &model);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_store_agrees_with_a_model_across_checkpoints_and_reopens(ops in prop::collection::vec(op(), 1..120)) {
        run(ContentAlgorithm::Aes256Gcm, &ops);
    }

    #[test]
    fn the_same_holds_with_xchacha(ops in prop::collection::vec(op(), 1..60)) {
        run(ContentAlgorithm::XChaCha20Poly1305, &ops);
    }
}

/// Enough names in one directory to split leaves and grow index levels,
/// then most removed again: every name found, listed once, in order.
#[test]
fn a_large_directory_splits_and_shrinks() {
    let algorithm = ContentAlgorithm::Aes256Gcm;
    let (mut store, backing) = new_store(algorithm);
    let n = 20_000u32;
    let name = |i: u32| format!("file-{i:06}-with-a-longer-name").into_bytes();
    for i in 0..n {
        let new = NewObject {
            kind: ObjectKind::Regular,
            mode: 0o600,
            uid: 0,
            gid: 0,
            rdev: 0,
            target: vec![],
        };
        store.create(ROOT_ID, &name(i), new, at(2)).unwrap();
    }
    store.checkpoint(at(3)).unwrap();
    let mut store = reopen(&backing, algorithm);
    let listed = store.readdir(ROOT_ID, 0, usize::MAX).unwrap();
    assert_eq!(listed.len(), n as usize);
    assert!(
        listed
            .windows(2)
            .all(|w| w[0].hash < w[1].hash || (w[0].hash == w[1].hash && w[0].name < w[1].name))
    );
    for i in (0..n).filter(|i| i % 10 != 0) {
        store.unlink(ROOT_ID, &name(i), at(4)).unwrap();
    }
    store.checkpoint(at(5)).unwrap();
    let mut store = reopen(&backing, algorithm);
    for i in 0..n {
        let found = store.lookup(ROOT_ID, &name(i));
        assert_eq!(found.is_ok(), i % 10 == 0, "{i}");
    }
    assert_eq!(store.getattr(ROOT_ID).unwrap().size, u64::from(n / 10));
}

/// Reopening without a checkpoint replays the log: the same tree, a
/// checkpoint made by the recovery (state *recovered*), and the log of the
/// earlier checkpoint retired.
#[test]
fn a_reopen_after_changes_replays_them_from_the_log() {
    let algorithm = ContentAlgorithm::Aes256Gcm;
    let (mut store, backing) = new_store(algorithm);
    let mut model = Model::new();
    let ops = [
        Op::Create {
            dir: 0,
            name: b"d".to_vec(),
            kind: 1,
        },
        Op::Create {
            dir: 1,
            name: b"a".to_vec(),
            kind: 0,
        },
        Op::Symlink {
            dir: 1,
            name: b"e.txt".to_vec(),
            long: true,
        },
        Op::Link {
            object: 2,
            dir: 0,
            name: b"b".to_vec(),
        },
        Op::Rename {
            from: 1,
            from_name: b"a".to_vec(),
            to: 0,
            to_name: b"c".to_vec(),
            mode: 0,
        },
        Op::Chmod {
            object: 1,
            mode: 0o700,
        },
        Op::Unlink {
            dir: 0,
            name: b"b".to_vec(),
        },
    ];
    for (t, op) in ops.iter().enumerate() {
        assert_eq!(
            apply(&mut store, &mut model, op, 10 + t as i64),
            Outcome::Ok,
            "{op:?}"
        );
    }
    let checkpoint = store.superblock().generation.checkpoint;
    let sequence = store.sequence();
    drop(store);
    let mut store = reopen(&backing, algorithm);
    check(&mut store, &model);
    let superblock = store.superblock();
    assert_eq!(superblock.generation.checkpoint, checkpoint + 1);
    assert_eq!(superblock.state, atrest_meta::superblock::State::Recovered);
    // The ops, RECOVERY and MOUNT, then the new checkpoint's cut.
    assert_eq!(superblock.generation.sequence, sequence + 2);
    let segments: Vec<String> = backing
        .snapshot()
        .into_keys()
        .filter(|n| n.starts_with("atrest.log/"))
        .collect();
    assert_eq!(
        segments,
        [atrest_meta::log::segment_name(superblock.replay_segment)]
    );
    // Nothing replayed the second time: no new checkpoint.
    drop(store);
    let store = reopen(&backing, algorithm);
    assert_eq!(store.superblock().generation.checkpoint, checkpoint + 1);
}
