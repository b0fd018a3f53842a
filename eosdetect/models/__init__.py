"""Models: their folders, configs, networks, and the pipeline that runs them (:class:`eosdetect.models.model.Model`)."""
