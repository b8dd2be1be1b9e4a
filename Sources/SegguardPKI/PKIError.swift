/// A failure of the PKI: a bad name, an unreadable file, a certificate that does not fit its use.
///
/// The message is one line and names what is wrong and where (the field, the file, the certificate).
public struct PKIError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The one-line message shown to the user.
    public let message: String

    /// Creates an error with the given one-line message.
    public init(_ message: String) {
        self.message = message
    }

    public var description: String { message }
}
