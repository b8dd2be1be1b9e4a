// The YAML tree the policy and state-file loaders check: libyaml's parser events composed into
// nodes that keep where they were written (1-based line and character column), the style of
// each scalar (a quoted "5" is text, not a number), anchors and aliases resolved. A key given
// twice in one mapping, a second document, an undefined alias, nesting deeper than
// `YAML.maxDepth` and alias expansion beyond `YAML.maxNodes` nodes are errors, each located.
// Values are never typed here: the loaders decide what a scalar means where they read it.

import CYAML

/// A position in the text: 1-based line, 1-based column counted in characters.
struct Mark: Equatable, Sendable {
    var line: Int
    var column: Int
}

/// A composed YAML node.
enum Node: Sendable {
    case scalar(Scalar)
    case mapping(Mapping)
    case sequence(Sequence)

    /// A scalar value as written (after YAML's quoting and folding), with its style.
    struct Scalar: Sendable {
        enum Style: Sendable { case plain, singleQuoted, doubleQuoted, literal, folded }
        var string: String
        var style: Style
        var mark: Mark
    }

    /// A mapping's pairs, in the order written.
    struct Mapping: RandomAccessCollection, Sendable {
        var pairs: [(key: Node, value: Node)]
        var mark: Mark
        var startIndex: Int { pairs.startIndex }
        var endIndex: Int { pairs.endIndex }
        subscript(i: Int) -> (key: Node, value: Node) { pairs[i] }
    }

    /// A sequence's items, in order.
    struct Sequence: RandomAccessCollection, Sendable {
        var items: [Node]
        var mark: Mark
        var startIndex: Int { items.startIndex }
        var endIndex: Int { items.endIndex }
        subscript(i: Int) -> Node { items[i] }
    }

    /// Where the node starts.
    var mark: Mark {
        switch self {
        case let .scalar(s): s.mark
        case let .mapping(m): m.mark
        case let .sequence(s): s.mark
        }
    }

    var scalar: Scalar? {
        if case let .scalar(s) = self { return s }
        return nil
    }
}

/// Why a text is not one YAML document: libyaml's description, and where.
struct YAMLError: Error, Sendable, Equatable {
    enum Kind: Sendable { case reader, syntax, structure }
    var kind: Kind
    /// libyaml's problem ("did not find expected ',' or ']'"), or the composer's.
    var problem: String
    /// libyaml's context ("while parsing a flow sequence"), if any.
    var context: String?
    var mark: Mark
}

/// Composes YAML text into a `Node` tree with libyaml.
enum YAML {
    /// Deepest nesting of sequences and mappings accepted (a policy needs about 6).
    static let maxDepth = 64
    /// Most nodes a document may amount to once aliases are expanded ("billion laughs").
    static let maxNodes = 200_000

    /// The single document of `text`, or nil when it holds none (empty, or only comments).
    static func compose(_ text: String) throws(YAMLError) -> Node? {
        var bytes = Array(text.utf8)
        let count = bytes.count
        if bytes.isEmpty { bytes = [0] }  // libyaml wants a non-null input pointer
        // On the heap: libyaml keeps the parser's own address (its read handler's data), and the
        // composer keeps it too; a Swift local's address is only valid during one call.
        let parser = UnsafeMutablePointer<yaml_parser_t>.allocate(capacity: 1)
        parser.initialize(to: yaml_parser_t())
        defer { parser.deinitialize(count: 1); parser.deallocate() }
        guard yaml_parser_initialize(parser) == 1 else {
            throw YAMLError(kind: .reader, problem: "out of memory", context: nil, mark: Mark(line: 1, column: 1))
        }
        defer { yaml_parser_delete(parser) }
        let result: Result<Node?, YAMLError> = bytes.withUnsafeBufferPointer { buffer in
            yaml_parser_set_input_string(parser, buffer.baseAddress, count)
            yaml_parser_set_encoding(parser, YAML_UTF8_ENCODING)
            var composer = Composer(parser: parser, text: buffer, count: count)
            do throws(YAMLError) { return .success(try composer.document()) } catch { return .failure(error) }
        }
        return try result.get()
    }
}

/// One parser event, copied out of libyaml's (which is freed at once).
private enum Event {
    case streamStart, streamEnd, documentStart, documentEnd, sequenceEnd, mappingEnd
    case alias(anchor: String)
    case scalar(anchor: String?, value: String, style: Node.Scalar.Style)
    case sequenceStart(anchor: String?)
    case mappingStart(anchor: String?)
}

private struct Composer {
    let parser: UnsafeMutablePointer<yaml_parser_t>
    let text: UnsafeBufferPointer<UInt8>
    let count: Int
    /// Anchored nodes, with the number of nodes each amounts to.
    var anchors: [String: (node: Node, size: Int)] = [:]
    var nodes = 0

    init(parser: UnsafeMutablePointer<yaml_parser_t>, text: UnsafeBufferPointer<UInt8>, count: Int) {
        self.parser = parser
        self.text = text
        self.count = count
    }

    mutating func document() throws(YAMLError) -> Node? {
        guard case (.streamStart, _) = try next() else { throw structure("expected the start of the text", Mark(line: 1, column: 1)) }
        let (first, firstMark) = try next()
        if case .streamEnd = first { return nil }
        guard case .documentStart = first else { throw structure("expected a document", firstMark) }
        let (event, mark) = try next()
        let root = try node(event, mark, depth: 0).node
        guard case .documentEnd = try next().0 else { throw structure("expected the end of the document", mark) }
        let (after, afterMark) = try next()
        if case .documentStart = after {
            throw YAMLError(kind: .structure, problem: "a second document ('---') in the file", context: "a policy is one document", mark: afterMark)
        }
        return root
    }

    func structure(_ problem: String, _ mark: Mark) -> YAMLError {
        YAMLError(kind: .structure, problem: problem, context: nil, mark: mark)
    }

    /// The node that starts with `event`, and the number of nodes it amounts to.
    mutating func node(_ event: Event, _ mark: Mark, depth: Int) throws(YAMLError) -> (node: Node, size: Int) {
        let result: (node: Node, size: Int)
        let anchor: String?
        switch event {
        case let .alias(name):
            guard let anchored = anchors[name] else { throw structure("alias *\(name) names no anchor before it", mark) }
            nodes += anchored.size
            guard nodes <= YAML.maxNodes else { throw structure("aliases expand to more than \(YAML.maxNodes) values", mark) }
            return anchored
        case let .scalar(a, value, style):
            anchor = a
            nodes += 1
            result = (.scalar(Node.Scalar(string: value, style: style, mark: mark)), 1)
        case let .sequenceStart(a):
            anchor = a
            guard depth < YAML.maxDepth else { throw structure("lists and mappings nested deeper than \(YAML.maxDepth) levels", mark) }
            nodes += 1
            var items: [Node] = []
            var size = 1
            while true {
                let (e, m) = try next()
                if case .sequenceEnd = e { break }
                let item = try node(e, m, depth: depth + 1)
                items.append(item.node)
                size += item.size
            }
            result = (.sequence(Node.Sequence(items: items, mark: mark)), size)
        case let .mappingStart(a):
            anchor = a
            guard depth < YAML.maxDepth else { throw structure("lists and mappings nested deeper than \(YAML.maxDepth) levels", mark) }
            nodes += 1
            var pairs: [(key: Node, value: Node)] = []
            var seen = Set<String>()
            var size = 1
            while true {
                let (e, m) = try next()
                if case .mappingEnd = e { break }
                let key = try node(e, m, depth: depth + 1)
                if let k = key.node.scalar?.string, !seen.insert(k).inserted {
                    throw YAMLError(kind: .structure, problem: "key \"\(k)\" given twice", context: nil, mark: key.node.mark)
                }
                let (ve, vm) = try next()
                let value = try node(ve, vm, depth: depth + 1)
                pairs.append((key.node, value.node))
                size += key.size + value.size
            }
            result = (.mapping(Node.Mapping(pairs: pairs, mark: mark)), size)
        default:
            throw structure("unexpected YAML event", mark)
        }
        guard nodes <= YAML.maxNodes else { throw structure("the document holds more than \(YAML.maxNodes) values", mark) }
        if let anchor { anchors[anchor] = result }
        return result
    }

    /// The next event and where it starts; a libyaml error as a `YAMLError`.
    mutating func next() throws(YAMLError) -> (Event, Mark) {
        var event = yaml_event_t()
        guard yaml_parser_parse(parser, &event) == 1 else { throw error() }
        defer { yaml_event_delete(&event) }
        let mark = Mark(line: Int(event.start_mark.line) + 1, column: Int(event.start_mark.column) + 1)
        func string(_ p: UnsafeMutablePointer<yaml_char_t>?) -> String? { p.map { String(cString: $0) } }
        switch event.type {
        case YAML_STREAM_START_EVENT: return (.streamStart, mark)
        case YAML_STREAM_END_EVENT: return (.streamEnd, mark)
        case YAML_DOCUMENT_START_EVENT: return (.documentStart, mark)
        case YAML_DOCUMENT_END_EVENT: return (.documentEnd, mark)
        case YAML_ALIAS_EVENT: return (.alias(anchor: string(event.data.alias.anchor) ?? ""), mark)
        case YAML_SCALAR_EVENT:
            let s = event.data.scalar
            let value = s.value.map { String(decoding: UnsafeBufferPointer(start: $0, count: s.length), as: UTF8.self) } ?? ""
            let style: Node.Scalar.Style = switch s.style {
            case YAML_SINGLE_QUOTED_SCALAR_STYLE: .singleQuoted
            case YAML_DOUBLE_QUOTED_SCALAR_STYLE: .doubleQuoted
            case YAML_LITERAL_SCALAR_STYLE: .literal
            case YAML_FOLDED_SCALAR_STYLE: .folded
            default: .plain
            }
            return (.scalar(anchor: string(s.anchor), value: value, style: style), mark)
        case YAML_SEQUENCE_START_EVENT: return (.sequenceStart(anchor: string(event.data.sequence_start.anchor)), mark)
        case YAML_SEQUENCE_END_EVENT: return (.sequenceEnd, mark)
        case YAML_MAPPING_START_EVENT: return (.mappingStart(anchor: string(event.data.mapping_start.anchor)), mark)
        case YAML_MAPPING_END_EVENT: return (.mappingEnd, mark)
        default: throw structure("unexpected YAML event", mark)
        }
    }

    /// libyaml's error, located: scanner and parser errors carry a mark; a reader error (not
    /// UTF-8, a control character) a byte offset, turned into line and column here.
    func error() -> YAMLError {
        let p = parser.pointee
        let problem = p.problem.map { String(cString: $0) } ?? "unknown error"
        switch p.error {
        case YAML_READER_ERROR:
            var what = problem
            if p.problem_value != -1 { what += " (#\(String(p.problem_value, radix: 16, uppercase: true)))" }
            return YAMLError(kind: .reader, problem: what, context: nil, mark: position(ofByte: p.problem_offset))
        case YAML_SCANNER_ERROR, YAML_PARSER_ERROR:
            return YAMLError(kind: .syntax, problem: problem, context: p.context.map { String(cString: $0) },
                             mark: Mark(line: Int(p.problem_mark.line) + 1, column: Int(p.problem_mark.column) + 1))
        case YAML_MEMORY_ERROR:
            return YAMLError(kind: .reader, problem: "out of memory", context: nil, mark: Mark(line: 1, column: 1))
        default:
            return YAMLError(kind: .syntax, problem: problem, context: nil, mark: Mark(line: 1, column: 1))
        }
    }

    /// Line and character column of the byte at `offset` (the text before it is valid UTF-8).
    func position(ofByte offset: Int) -> Mark {
        var line = 1, column = 1
        for b in text.prefix(min(offset, count)) {
            if b == 0x0A { line += 1; column = 1 } else if b & 0xC0 != 0x80 { column += 1 }
        }
        return Mark(line: line, column: column)
    }
}
