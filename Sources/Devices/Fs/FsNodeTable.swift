import HostSystem
#if canImport(Glibc)
import Glibc
#endif

/// A file or directory the guest knows by a node id: an LG_O_PATH descriptor on it (which opens
/// nothing and follows nothing), the host's identity of it, and how many times the guest was
/// told about it (`nlookup`, which FORGET counts back down).
struct FsNode {
    let fd: CInt
    let device: UInt64
    let inode: UInt64
    /// `S_IFMT` bits at lookup time: a file's type never changes.
    let type: UInt32
    var lookups: UInt64
}

/// An open file or directory: a real descriptor, opened from a node.
struct FsHandle {
    let fd: CInt
    let isDirectory: Bool
}

/// The guest's node ids and file handles, with the descriptors behind them, and the bounds on
/// both: a guest that looks up a million names gets ENFILE past `maxNodes`, one that opens a
/// million files gets EMFILE past `maxHandles`, and the process keeps its descriptors.
///
/// Node ids are handed out in sequence, never reused within a mount, and are not the host's
/// inode numbers (which the attributes carry): a stale id from a forgotten node finds nothing.
/// Two names for one host inode (hard links) share one node.
struct FsNodeTable {
    private(set) var nodes: [UInt64: FsNode] = [:]
    private var byIdentity: [Identity: UInt64] = [:]
    private(set) var handles: [UInt64: FsHandle] = [:]
    private var nextNode: UInt64 = Fuse.rootID + 1
    private var nextHandle: UInt64 = 1
    let maxNodes: Int
    let maxHandles: Int

    struct Identity: Hashable { let device: UInt64; let inode: UInt64 }

    init(root: FsNode, maxNodes: Int, maxHandles: Int) {
        self.maxNodes = max(maxNodes, 2)
        self.maxHandles = max(maxHandles, 1)
        nodes[Fuse.rootID] = root
        byIdentity[Identity(device: root.device, inode: root.inode)] = Fuse.rootID
    }

    var root: FsNode { nodes[Fuse.rootID]! }

    func node(_ id: UInt64) -> FsNode? { nodes[id] }

    /// Records one more lookup of the inode `fd` refers to (described by `status`), and
    /// returns its node id. Takes `fd` over: it is closed if the inode already has a node.
    /// Throws ENFILE (closing `fd`) when the table is full.
    mutating func insert(fd: CInt, status: stat) throws(SystemError) -> UInt64 {
        let identity = Identity(device: UInt64(status.st_dev), inode: UInt64(status.st_ino))
        if let id = byIdentity[identity] {
            FileSystemCalls.close(fd)
            nodes[id]!.lookups &+= 1
            return id
        }
        guard nodes.count < maxNodes else {
            FileSystemCalls.close(fd)
            throw SystemError(code: ENFILE)
        }
        let id = nextNode
        nextNode += 1
        nodes[id] = FsNode(fd: fd, device: identity.device, inode: identity.inode,
                           type: UInt32(status.st_mode) & FileType.mask, lookups: 1)
        byIdentity[identity] = id
        return id
    }

    /// Counts one more lookup of an existing node (`.` and `..`).
    mutating func addLookup(_ id: UInt64) { nodes[id]?.lookups &+= 1 }

    /// FORGET: the guest drops `count` lookups of `id`; at zero the node and its descriptor go.
    /// Returns false for an id the table does not know (a double FORGET, a made-up id).
    /// The root is never forgotten.
    @discardableResult
    mutating func forget(_ id: UInt64, count: UInt64) -> Bool {
        guard let node = nodes[id] else { return false }
        guard id != Fuse.rootID else { return true }
        if node.lookups > count {
            nodes[id]!.lookups = node.lookups - count
            return true
        }
        nodes[id] = nil
        byIdentity[Identity(device: node.device, inode: node.inode)] = nil
        FileSystemCalls.close(node.fd)
        return true
    }

    func handle(_ fh: UInt64) -> FsHandle? { handles[fh] }

    /// Takes `fd` over as a new handle; EMFILE (closing `fd`) when there are too many.
    mutating func addHandle(fd: CInt, isDirectory: Bool) throws(SystemError) -> UInt64 {
        guard handles.count < maxHandles else {
            FileSystemCalls.close(fd)
            throw SystemError(code: EMFILE)
        }
        let fh = nextHandle
        nextHandle += 1
        handles[fh] = FsHandle(fd: fd, isDirectory: isDirectory)
        return fh
    }

    /// Closes handle `fh`; false if there is none.
    @discardableResult
    mutating func removeHandle(_ fh: UInt64) -> Bool {
        guard let handle = handles.removeValue(forKey: fh) else { return false }
        FileSystemCalls.close(handle.fd)
        return true
    }

    /// Everything but the root goes: DESTROY, a reset, the device going away.
    mutating func clear() {
        for (id, node) in nodes where id != Fuse.rootID { FileSystemCalls.close(node.fd) }
        for handle in handles.values { FileSystemCalls.close(handle.fd) }
        let root = self.root
        nodes = [Fuse.rootID: root]
        byIdentity = [Identity(device: root.device, inode: root.inode): Fuse.rootID]
        handles = [:]
    }

    /// Closes every descriptor, the root's included. The table is unusable afterwards.
    mutating func closeAll() {
        clear()
        FileSystemCalls.close(root.fd)
        nodes = [:]
    }
}
