"""A tiny order-processing app on ExoFlow queues (the Python twin of sdk/rust/examples/orders.rs).

Start the proxies (``exo up``), then: ``python sdk/python/examples/orders.py``.
Set ``EXO_EQS_ENDPOINT`` to use another proxy.
"""

from __future__ import annotations

import sys

import exoflow
from exoflow import QueueOptions


def main() -> int:
    with exoflow.QueueClient.from_env() as queues:
        backend = queues.describe()
        print(f"connected to eqs backed by '{backend.backend}'")

        queues.create_queue("orders-dead")
        queues.create_queue("orders", QueueOptions(max_receives=5, dead_letter_queue="orders-dead"))

        for n in range(1, 4):
            message_id = queues.send("orders", f"order {n}", attributes={"customer": f"c{n}"})
            print(f"sent order {n} as {message_id}")

        handled = 0
        while handled < 3:
            batch = queues.receive("orders", max_messages=10, wait_seconds=2)
            if not batch:
                break
            for message in batch:
                customer = message.attributes.get("customer", "?")
                print(f"handling {message.text!r} for {customer} (delivery #{message.dequeue_count})")
                queues.ack("orders", message)
                handled += 1
        print(f"handled {handled} orders")
        return 0 if handled >= 3 else 1


if __name__ == "__main__":
    sys.exit(main())
