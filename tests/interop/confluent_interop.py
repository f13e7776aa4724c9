"""Interop with Confluent's own Avro serde (confluent-kafka's SchemaRegistryClient).

produce: registers schemas/raw_reading.avsc through Confluent's AvroSerializer
         (subject <topic>-value) and writes readings to the raw topic.
consume: reads the validated topic with Confluent's AvroDeserializer and prints
         each value as one JSON line.

Run by tests/tests/interop.rs (make test) with the broker and registry of the run.
"""
import argparse
import json
import pathlib
import sys
import time

from confluent_kafka import Consumer, Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext, StringSerializer

ROOT = pathlib.Path(__file__).resolve().parents[2]


def produce(args):
    registry = SchemaRegistryClient({"url": args.registry})
    schema = (ROOT / "schemas" / "raw_reading.avsc").read_text()
    serializer = AvroSerializer(registry, schema, conf={"auto.register.schemas": True})
    key = StringSerializer("utf_8")
    producer = Producer({"bootstrap.servers": args.bootstrap})
    now = int(time.time() * 1000)
    readings = [
        {
            "event_id": "confluent-python-1",
            "asset_id": "MTR-1",
            "asset_kind": "METER",
            "event_time": now - 60_000,
            "received_time": now,
            "source": "confluent-python",
            "channel": "UNKNOWN",
            "measurements": [{"metric": "POWER", "value": 1250.0, "unit": "W"}],
            "attributes": {"client": "confluent-kafka-python"},
        },
        {
            "event_id": "confluent-python-2",
            "asset_id": "TURBINE_00001",
            "asset_kind": None,
            "event_time": now - 30_000,
            "received_time": now,
            "source": "confluent-python",
            "channel": "UNKNOWN",
            "measurements": [
                {"metric": "WIND_SPEED", "value": 11.0, "unit": "m/s"},
                {"metric": "POWER", "value": 2.1, "unit": "MW"},
                {"metric": "GEARBOX_TEMPERATURE", "value": 160.0, "unit": "degF"},
            ],
            "attributes": {},
        },
    ]
    for r in readings:
        ctx = SerializationContext(args.topic, MessageField.VALUE)
        producer.produce(args.topic, key=key(r["asset_id"]), value=serializer(r, ctx))
    if producer.flush(30) != 0:
        sys.exit("records not delivered")


def consume(args):
    registry = SchemaRegistryClient({"url": args.registry})
    deserializer = AvroDeserializer(registry)
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": f"interop-{time.time()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([args.topic])
    got = 0
    deadline = time.time() + 60
    while got < args.count and time.time() < deadline:
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            continue
        value = deserializer(msg.value(), SerializationContext(msg.topic(), MessageField.VALUE))
        print(json.dumps(value, default=str), flush=True)
        got += 1
    consumer.close()
    if got < args.count:
        sys.exit(f"only {got} of {args.count} records read")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["produce", "consume"])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--registry", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--count", type=int, default=1)
    args = p.parse_args()
    produce(args) if args.mode == "produce" else consume(args)


if __name__ == "__main__":
    main()
