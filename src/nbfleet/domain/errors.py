"""One exception per ModelArts error code family; the API renders them as error bodies.

Every refusal in nbfleet is raised as a ``ModelArtsError`` carrying the upstream code, the HTTP
status the public catalogue assigns, and an English message.
"""

from __future__ import annotations


class ModelArtsError(Exception):
    """A refusal that the API answers with ``{"error_code", "error_msg"}``."""

    code = "ModelArts.0101"
    http_status = 400
    message = "Invalid Argument."

    def __init__(self, message: str | None = None, *, code: str | None = None, http_status: int | None = None):
        if code is not None:
            self.code = code
        if http_status is not None:
            self.http_status = http_status
        self.message = message if message is not None else type(self).message
        super().__init__(f"{self.code}: {self.message}")


class InvalidParameter(ModelArtsError):
    """A query parameter is out of range or not one of its enum values (0104)."""

    code = "ModelArts.0104"
    message = "Parameter error."


class UnsupportedSortKey(ModelArtsError):
    code = "ModelArts.6303"
    message = "The field does not support sorting."


class InvalidPayload(ModelArtsError):
    code = "ModelArts.6400"
    message = "Invalid request payload, please check."


class PayloadTooLarge(InvalidPayload):
    """A body over the configured limit, refused by its declared length or as soon as it grows past it."""

    http_status = 413

    def __init__(self, limit: int):
        super().__init__(f"Invalid request payload: the body is larger than {limit} bytes.")


class MissingProperty(ModelArtsError):
    code = "ModelArts.6335"

    def __init__(self, name: str):
        super().__init__(f"'{name}' is a required property.")


class WrongType(ModelArtsError):
    code = "ModelArts.6332"

    def __init__(self, name: str, type_name: str):
        super().__init__(f"Incorrect parameter type. The '{name}' parameter must be of the '{type_name}' type.")


class InvalidProperty(ModelArtsError):
    code = "ModelArts.6336"

    def __init__(self, name: str, detail: str = ""):
        msg = f"'{name}' property value is incorrect."
        if detail:
            msg += f" {detail}"
        super().__init__(msg)


class ForbiddenCharacter(ModelArtsError):
    code = "ModelArts.6334"

    def __init__(self, char: str):
        super().__init__(f"Invalid value for name or description. The character {char} is not allowed.")


class NotebookNotFound(ModelArtsError):
    code = "ModelArts.6309"
    message = "The instance does not exist."


class ResourceNotFound(ModelArtsError):
    """Images and storage mounts that do not exist (6404)."""

    code = "ModelArts.6404"
    message = "The resource does not exist."


class IllegalTransition(ModelArtsError):
    """An operation the instance's current status does not allow; the code says why."""

    MESSAGES = {
        "ModelArts.6304": "Please stop the instance before deleting.",
        "ModelArts.6305": "The instance is already running.",
        "ModelArts.6306": "The instance is starting.",
        "ModelArts.6308": "The instance is stopping.",
        "ModelArts.6326": "The instance is frozen. Check whether your account is in arrears in Billing Center.",
        "ModelArts.6327": "The instance is not in running. Please refresh the page and start it.",
        "ModelArts.6357": (
            "The operation is not allowed because another operation is being performed on the "
            "instance or the instance is in the target state."
        ),
    }

    def __init__(self, code: str, status: str, operation: str):
        self.status = status
        self.operation = operation
        super().__init__(self.MESSAGES.get(code, "The operation is not allowed."), code=code)


class FieldNotModifiable(ModelArtsError):
    code = "ModelArts.6347"

    def __init__(self, status: str, field: str):
        super().__init__(f"When the instance is in the '{status}' status, the '{field}' parameter cannot be modified.")


class InstanceExists(ModelArtsError):
    code = "ModelArts.6301"
    message = "The instance already exists."


class InstanceQuotaReached(ModelArtsError):
    code = "ModelArts.6302"
    message = "The instance count already reaches the maximum value."


class WorkspaceNotFound(ModelArtsError):
    code = "ModelArts.0102"
    message = "The workspace does not exist."


class FlavorNotSupported(ModelArtsError):
    code = "ModelArts.6323"
    message = "The flavor is not supported, please check it."


class FlavorSoldOut(ModelArtsError):
    code = "ModelArts.6329"
    message = "Sorry, this flavor specification is sold out. Please try others."


class FlavorFeatureMismatch(ModelArtsError):
    code = "ModelArts.6870"

    def __init__(self, flavor: str, feature: str):
        super().__init__(f"Specified flavor {flavor} does not support current instance feature {feature}.")


class FlavorNotSwitchable(ModelArtsError):
    code = "ModelArts.6792"

    def __init__(self, notebook_id: str, flavor: str):
        super().__init__(
            f"Instance {notebook_id} does not support to update flavor to {flavor}, please try another flavor."
        )


class ImageNotFound(ModelArtsError):
    code = "ModelArts.6797"

    def __init__(self, image_id: str):
        super().__init__(f"Specified image {image_id} cannot be found.")


class ImageTagConflict(ModelArtsError):
    """``namespace/name:tag`` is taken: by one of the caller's images, or (for a save) by any image at that
    address, whose content a save would overwrite."""

    code = "ModelArts.6737"

    def __init__(self, tag: str, image: str):
        super().__init__(f"Conflict tag {tag} for image {image}, tag cannot be duplicated.")


class ImageBeingSaved(ModelArtsError):
    """The image is still being saved from a notebook (INIT or CREATING); it can be deleted once that ends."""

    code = "ModelArts.6357"

    def __init__(self, image_id: str):
        super().__init__(
            f"The operation is not allowed because the image {image_id} is being saved from a "
            "notebook. Try again when its status is ACTIVE or CREATE_FAILED."
        )


class NotSupportedOnRuntime(ModelArtsError):
    """The configured runtime cannot do this at all (a property of the installation, not of the request)."""

    code = "ModelArts.6361"

    def __init__(self, what: str, runtime: str, why: str):
        super().__init__(
            f"ModelArts internal service or configuration error. {what} is not supported on the "
            f"{runtime} runtime: {why}"
        )


class ImageFlavorMismatch(ModelArtsError):
    code = "ModelArts.6330"
    message = "The flavor type of profile does not match the type of flavor. Please check it."


class SshConfigMissing(ModelArtsError):
    code = "ModelArts.6768"

    def __init__(self, image: str):
        super().__init__(f"SSH configuration is missing, target image {image} only support SSH dev service.")


class KeyPairNotAllowed(ModelArtsError):
    code = "ModelArts.6789"

    def __init__(self, name: str):
        super().__init__(
            f"The current user does not have the permission to use the SSH key pair {name}, "
            "please update the key pair of the instance and try again."
        )


class StorageRequired(ModelArtsError):
    code = "ModelArts.6316"
    message = "The param 'storage' is needed for creating notebook instance."


class ObsPathRequired(ModelArtsError):
    code = "ModelArts.6317"
    message = "The 'path' parameter is required when the storage type is OBS."


class ObsPathSlash(ModelArtsError):
    code = "ModelArts.6318"
    message = "The param 'path' needs to end with /."


class ObsBucketRoot(ModelArtsError):
    code = "ModelArts.6358"
    message = (
        "The path parameter is incorrect. It cannot be the root directory of an OBS bucket, "
        "but must be a specific directory in the OBS bucket."
    )


class StorageCategoryUnsupported(ModelArtsError):
    code = "ModelArts.6324"
    message = "This location type is not supported. Please check it."


class EvsSizeOutOfRange(ModelArtsError):
    code = "ModelArts.6331"

    def __init__(self, low: int, high: int):
        super().__init__(f"The evs volume size ranges from {low} GB to {high} GB.")


class DurationOutOfRange(ModelArtsError):
    code = "ModelArts.6349"

    def __init__(self, low: int, high: int | str):
        super().__init__(f"The 'duration' parameter is incorrect. The value ranges from {low} to {high}.")


class PermissionDenied(ModelArtsError):
    code = "ModelArts.0108"
    http_status = 403

    def __init__(self, operation: str):
        super().__init__(f"You are not authorized to perform the ({operation}) operation.")


class ProjectMismatch(ModelArtsError):
    code = "ModelArts.0210"
    http_status = 403
    message = "The project id in the request URL does not match the token."


class AuthenticationFailed(ModelArtsError):
    """Gateway-style authentication failures (APIGW.0301)."""

    code = "APIGW.0301"
    http_status = 401

    def __init__(self, detail: str):
        super().__init__(f"Incorrect IAM authentication information: {detail}")


class AccessKeyDisabled(ModelArtsError):
    code = "ModelArts.0206"
    http_status = 403
    message = "Invalid AK/SK."


class ReplayedRequest(ModelArtsError):
    """A state-changing signed request whose signature was already received (a replay, or a repeat of the
    same call within the second of its X-Sdk-Date)."""

    code = "ModelArts.0208"
    http_status = 401
    message = (
        "Failed to check the authorization request header: this signed request was already received. "
        "Sign it again (with a new X-Sdk-Date) to repeat the operation."
    )


class TokenInvalid(ModelArtsError):
    code = "ModelArts.0203"
    http_status = 401
    message = "Invalid token."


class TokenExpired(ModelArtsError):
    code = "ModelArts.0202"
    http_status = 401
    message = "Invalid token header because the token has expired."


class TokenEmpty(ModelArtsError):
    code = "ModelArts.0201"
    http_status = 401
    message = "Token doesn't exist."


class SystemBusy(ModelArtsError):
    code = "ModelArts.6101"
    http_status = 429
    message = "The system is busy now. Please try again later."
    retry_after = 5  # seconds, sent as Retry-After


class TooManySignIns(SystemBusy):
    """Password sign-in refused without checking the password: the account or the address failed too often."""

    def __init__(self, retry_after: int):
        self.retry_after = retry_after
        super().__init__(f"Too many failed sign-ins for this user or from this address. Try again in {retry_after} s.")


class SignInBusy(SystemBusy):
    """Every slot for password checks is taken; the sign-in is refused instead of queued."""

    retry_after = 1
    message = "Too many sign-ins are being checked at once. Try again in 1 s."


class RequestTimedOut(ModelArtsError):
    code = "ModelArts.6100"
    http_status = 408
    message = "The request timed out. Please try again."


class BackendUnavailable(ModelArtsError):
    code = "ModelArts.6102"
    http_status = 503
    message = "The server has encountered an error and fails to process the request. Please try again later."


class InternalError(ModelArtsError):
    code = "ModelArts.0010"
    http_status = 500
    message = "Internal error."


class ApiNotFound(ModelArtsError):
    code = "APIGW.0101"
    http_status = 404
    message = "The API does not exist or has not been published in the environment."


class MethodNotAllowed(ModelArtsError):
    code = "ModelArts.0104"
    http_status = 405
    message = "The method is not allowed for the requested URL."
