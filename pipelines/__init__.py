"""The DVC stages, one module each (`python -m sightline.pipelines.<stage>`).

Under `sightline repro` a stage process hands its stage to the preloaded fork server
(sightline.stage_server) before the stage module imports anything heavy.
"""

from sightline.stage_server import delegate_if_served

delegate_if_served()
