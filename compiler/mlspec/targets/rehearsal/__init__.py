"""Rehearse an environment: run its rendered pipelines and Jobs in local containers against stand-in stores."""
