// Error classes, one per wire code of SPEC.md section 8 (the Python client's zwatch.errors).

export class ZwatchError extends Error {
  constructor(message, code = "INTERNAL", details = {}) {
    super(message);
    this.name = this.constructor.name;
    this.code = code;
    this.details = details;
  }

  static fromWire(body) {
    if (body === null || typeof body !== "object") {
      return new Internal(`malformed error body: ${String(body)}`, "INTERNAL");
    }
    const { code = "INTERNAL", message = "", ...details } = body;
    const Klass = BY_CODE[code] ?? ZwatchError;
    return new Klass(String(message), code, details);
  }
}

const CODES = {
  InvalidArgument: "INVALID_ARGUMENT",
  Compacted: "COMPACTED",
  FutureRevision: "FUTURE_REVISION",
  ResourceExhausted: "RESOURCE_EXHAUSTED",
  Unavailable: "UNAVAILABLE",
  Internal: "INTERNAL",
  Unimplemented: "UNIMPLEMENTED",
  FailedPrecondition: "FAILED_PRECONDITION",
  NoSpace: "NO_SPACE",
  LeaseNotFound: "LEASE_NOT_FOUND",
  LeaseExists: "LEASE_EXISTS",
  LeaseTTLTooLarge: "LEASE_TTL_TOO_LARGE",
  Unauthenticated: "UNAUTHENTICATED",
  PermissionDenied: "PERMISSION_DENIED",
  UserExists: "USER_EXISTS",
  UserNotFound: "USER_NOT_FOUND",
  RoleExists: "ROLE_EXISTS",
  RoleNotFound: "ROLE_NOT_FOUND",
  RoleNotGranted: "ROLE_NOT_GRANTED",
  PermissionNotGranted: "PERMISSION_NOT_GRANTED",
  StreamDiverged: "STREAM_DIVERGED",
  CursorNotFound: "CURSOR_NOT_FOUND",
};

function define(name, code) {
  // A named subclass whose default code is its wire code.
  const Klass = {
    [name]: class extends ZwatchError {
      constructor(message, c = code, details = {}) {
        super(message, c, details);
      }
    },
  }[name];
  return Klass;
}

export const errors = {};
const BY_CODE = {};
for (const [name, code] of Object.entries(CODES)) {
  errors[name] = define(name, code);
  BY_CODE[code] = errors[name];
}

export const {
  InvalidArgument, Compacted, FutureRevision, ResourceExhausted, Unavailable, Internal, Unimplemented,
  FailedPrecondition, NoSpace, LeaseNotFound, LeaseExists, LeaseTTLTooLarge, Unauthenticated,
  PermissionDenied, UserExists, UserNotFound, RoleExists, RoleNotFound, RoleNotGranted, PermissionNotGranted,
} = errors;

export const ALL_CODES = Object.values(CODES);
