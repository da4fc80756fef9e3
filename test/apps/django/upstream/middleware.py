from django.conf import settings


class UserHeaderMiddleware:
    """With USER_HEADER=1, an answer to a request that is authenticated
    once the view has run (so a login answer too) carries X-User-Id: the
    username, as apps do that tell a front proxy who the user is."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if settings.USER_HEADER:
            user = getattr(request, "user", None)
            if user is not None and user.is_authenticated:
                response["X-User-Id"] = user.get_username()
        return response
