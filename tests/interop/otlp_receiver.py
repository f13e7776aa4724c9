"""A minimal OTLP/HTTP trace receiver for the trace tests.

Listens on 127.0.0.1:PORT for `POST /v1/traces` (protobuf, optionally
gzip-compressed, as the OpenTelemetry exporters send it), decodes the
request with the official protobuf definitions (opentelemetry-proto) and
appends one JSON line per span to OUT:

{"service": "...", "name": "...", "trace_id": "hex", "span_id": "hex",
 "parent_span_id": "hex" or "", "kind": N, "attributes": {...},
 "links": [{"trace_id": "hex", "span_id": "hex"}], "status": N,
 "schema_url": "...", "start": ns, "end": ns}
"""
import gzip
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

port, out_path = int(sys.argv[1]), sys.argv[2]


def value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        with open(out_path, "a") as out:
            for rs in request.resource_spans:
                service = next(
                    (value(a.value) for a in rs.resource.attributes if a.key == "service.name"), ""
                )
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        links = [
                            {"trace_id": l.trace_id.hex(), "span_id": l.span_id.hex()}
                            for l in span.links
                        ]
                        out.write(json.dumps({
                            "service": service,
                            "name": span.name,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_span_id": span.parent_span_id.hex(),
                            "kind": span.kind,
                            "attributes": {a.key: value(a.value) for a in span.attributes},
                            "links": links,
                            "status": span.status.code,
                            "schema_url": ss.schema_url,
                            "start": span.start_time_unix_nano,
                            "end": span.end_time_unix_nano,
                        }) + "\n")
        reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
