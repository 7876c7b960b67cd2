"""Training OFA supernets with progressive shrinking (``ofa-deploy train``, ``ofa-deploy eval-subnets``)."""
