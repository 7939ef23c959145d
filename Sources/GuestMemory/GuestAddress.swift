/// A guest-physical address.
///
/// Never a bare `UInt64`: an address the guest handed us and a length we computed are different
/// things, and the type system keeps them apart. Arithmetic that could overflow is checked and
/// returns `nil` instead of wrapping around into some other part of guest memory. The
/// arithmetic is inlinable, because every guest-memory access in every layer goes through it.
public struct GuestAddress: RawRepresentable, Hashable, Comparable, Sendable {
    public let rawValue: UInt64

    @inlinable
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    @inlinable
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }

    @inlinable
    public static func < (a: GuestAddress, b: GuestAddress) -> Bool { a.rawValue < b.rawValue }

    /// `self + offset`, or `nil` if that wraps past 2^64.
    @inlinable
    public func adding(_ offset: UInt64) -> GuestAddress? {
        let (sum, overflow) = rawValue.addingReportingOverflow(offset)
        return overflow ? nil : GuestAddress(sum)
    }

    /// `self + offset` for offsets the VMM itself chose (layout constants). Traps on overflow,
    /// which would be a bug in the VMM, never something a guest can cause.
    @inlinable
    public static func + (a: GuestAddress, offset: UInt64) -> GuestAddress {
        GuestAddress(a.rawValue + offset)
    }

    /// The distance from `other` up to `self` (`self - other`), or `nil` if `other` is above.
    public func offset(from other: GuestAddress) -> UInt64? {
        rawValue >= other.rawValue ? rawValue - other.rawValue : nil
    }

    public func isAligned(to alignment: UInt64) -> Bool {
        precondition(alignment.nonzeroBitCount == 1, "alignment must be a power of two")
        return rawValue & (alignment - 1) == 0
    }

    /// The next address at or above `self` that is a multiple of `alignment`, or `nil` on overflow.
    public func alignedUp(to alignment: UInt64) -> GuestAddress? {
        precondition(alignment.nonzeroBitCount == 1, "alignment must be a power of two")
        guard let bumped = adding(alignment - 1) else { return nil }
        return GuestAddress(bumped.rawValue & ~(alignment - 1))
    }

    public func alignedDown(to alignment: UInt64) -> GuestAddress {
        precondition(alignment.nonzeroBitCount == 1, "alignment must be a power of two")
        return GuestAddress(rawValue & ~(alignment - 1))
    }
}

extension GuestAddress: CustomStringConvertible {
    public var description: String { "0x" + String(rawValue, radix: 16) }
}

extension GuestAddress: ExpressibleByIntegerLiteral {
    public init(integerLiteral value: UInt64) { self.init(value) }
}
