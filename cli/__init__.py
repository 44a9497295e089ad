"""The ``dnah`` command: the composition root that starts and stops the parts on one machine.

Unlike the services, it may import every package: it is where they are put together.
"""
