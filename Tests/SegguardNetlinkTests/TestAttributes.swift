// The attribute builder shared by the netlink test files: puts typed attributes into a
// libnl message, asserting each put succeeds.

import CLibNL
import Testing

/// One attribute to put into a test message.
enum TestAttr: Sendable {
    case u8(Int32, UInt8)
    case u16(Int32, UInt16)
    case u32(Int32, UInt32)
    case bytes(Int32, [UInt8])
    case string(Int32, String)
    case nested(Int32, [TestAttr])
}

/// Appends `attrs` (recursively for nested ones) to `msg` with libnl's nla_put family.
func putAttributes(_ msg: OpaquePointer, _ attrs: [TestAttr]) {
    for attr in attrs {
        switch attr {
        case .u8(let t, let v): #expect(nla_put_u8(msg, t, v) == 0)
        case .u16(let t, let v): #expect(nla_put_u16(msg, t, v) == 0)
        case .u32(let t, let v): #expect(nla_put_u32(msg, t, v) == 0)
        case .string(let t, let s): #expect(nla_put_string(msg, t, s) == 0)
        case .bytes(let t, let data):
            let rc = data.withUnsafeBytes { nla_put(msg, t, Int32(data.count), $0.baseAddress) }
            #expect(rc == 0)
        case .nested(let t, let inner):
            let start = nla_nest_start(msg, t)
            #expect(start != nil)
            putAttributes(msg, inner)
            #expect(nla_nest_end(msg, start) == 0)
        }
    }
}
