"""CNI sources and rendering (no cluster needed).

- :mod:`.sources`     obtain a manifest (URL, file) or Helm chart into the run's artifacts, with sha256
- :mod:`.manifests`   parse multi-document YAML, object identity, checks, apply order, object table
- :mod:`.antrea`      the Antrea profile: config keys, image pinning and mirroring
- :mod:`.generic`     generic (and lab) manifests: pass-through with optional image mirroring
- :mod:`.profiles`    profile name -> renderer
- :mod:`.diff`        upstream vs rendered: unified diff and a table of changed objects
- :mod:`.custom_cni`  Kubespray custom_cni group_vars and Jinja protection of manifests
"""
