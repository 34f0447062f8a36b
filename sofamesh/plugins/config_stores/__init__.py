"""Config store plugins: where Pilot keeps policy resources (``embedded``, ``files``, ``etcd``)."""
