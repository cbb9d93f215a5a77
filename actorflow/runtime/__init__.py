"""The runtime: Thespian actors that run a placed plan.

``outlets`` (flow-controlled links and routes), ``steps`` (user functions with
error accounting), ``stage`` (the base of every placed actor), ``source``,
``step`` (chains, routers, state), ``sink``, ``topology`` (places the plan) and
``guard`` (ends a worker's processes when its command dies).
"""
