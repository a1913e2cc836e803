"""gRPC servicers for the CSI Identity, Controller and Node services, plus sharevol's Admin
service; validation of requests, the error-mapping interceptor and per-key locks."""
